from eqmon_app.cli import main

raise SystemExit(main())
