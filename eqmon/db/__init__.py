"""The state database: everything eqmon keeps that is not telemetry (alerts and their history,
silences, the notification outbox, the audit log, the inventory's catalog and ledger), in SQLite (the default, embedded) or
PostgreSQL, through SQLAlchemy 2 Core, its schema changed only by the Alembic migrations in
``migrations/`` (run at start-up and by ``eqmon db upgrade``).

* ``engine.py``  — ``open_engine(site.database, data_dir)``: the engine, configured per database
* ``schema.py``  — the tables, on one ``MetaData`` with a naming convention
* ``migrate.py`` — ``upgrade(engine)``, ``current(engine)``, the refusal of a newer schema
* ``repos.py``   — small typed repositories (silences, notification outbox, audit log)
"""

from .engine import DatabaseUnavailable, StateDatabaseError, open_engine, redacted, writing
from .migrate import HEAD, SchemaTooNew, current, upgrade

__all__ = [
    "HEAD",
    "DatabaseUnavailable",
    "SchemaTooNew",
    "StateDatabaseError",
    "current",
    "open_engine",
    "redacted",
    "upgrade",
    "writing",
]
