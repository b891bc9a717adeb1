"""The shelf feed's write path, step by step, side by side in one run (docs/performance.md,
"Inventory"): what each change to ``Ledger.shelf_counts`` and the ledger's schema bought.

    .venv/bin/python bench/inventory_ab.py [--base main] [--rounds 5]
    .venv/bin/python bench/inventory_ab.py --postgres postgresql://postgres@127.0.0.1:5432/test

Fills the ledger as bench/inventory.py does (10,000 bins weighed by shelves, 1,000,000 rows) on
the schema of migration 0004 (the ledger's two foreign keys and its ``ts`` index), then runs the
variants below in turn, ``--rounds`` times (the ledger grows as they write; taking turns keeps
that fair), each with its own ``ShelfFeed`` over its own quarter of the shelves, and prints the
median readings/s of each:

* ``base``         the code at ``--base`` (``ShelfFeed`` and ``_apply_shelf_batch``), 0004's schema
* ``code``         this tree's code, 0004's schema
* ``- fks``        … without the ledger's foreign keys (SQLite: ``PRAGMA foreign_keys = OFF`` on
                   the connection, which skips the checks as dropping them does; PostgreSQL:
                   dropped, and added back ``NOT VALID`` between rounds, which checks new rows)
* ``- fks, - ts``  … and without the ``ts`` index: migration 0005's schema

The worst case (every reading changes its bin) and the mix (1 in ``--change-every``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, event  # noqa: E402

import inventory.ledger  # noqa: E402
from bench.inventory import NOW, FeedRun, database, fill  # noqa: E402
from eqmon import db  # noqa: E402
from eqmon.db.engine import create  # noqa: E402
from inventory.feed import ShelfFeed  # noqa: E402
from inventory.ledger import Ledger  # noqa: E402

FKS = (
    ("fk_inventory_ledger_item_id_inventory_items", "item_id", "inventory_items"),
    ("fk_inventory_ledger_location_id_inventory_locations", "location_id", "inventory_locations"),
)


def load(rev: str, name: str) -> types.ModuleType:
    """``inventory/<name>.py`` as of ``rev``, as a module of the package ``inventory``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:inventory/{name}.py"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    mod = types.ModuleType(f"inventory._ab_{name}")
    mod.__package__ = "inventory"
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{rev}:inventory/{name}.py", "exec"), mod.__dict__)  # noqa: S102 - our own history
    return mod


class Schema:
    """Switches the ledger's foreign keys and ``ts`` index on and off."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.fks = self.ts = True
        if not self.pg:

            @event.listens_for(engine, "connect")
            def _fk(dbapi_conn: Any, _record: Any) -> None:  # after create()'s own (foreign_keys = ON)
                if not self.fks:
                    dbapi_conn.execute("PRAGMA foreign_keys = OFF")

    def set(self, fks: bool, ts: bool) -> None:
        if fks != self.fks:
            self.fks = fks
            if self.pg:
                with self.engine.begin() as conn:
                    for name, col, parent in FKS:
                        conn.exec_driver_sql(
                            f"ALTER TABLE inventory_ledger ADD CONSTRAINT {name} FOREIGN KEY ({col}) REFERENCES {parent} (id) "
                            "ON DELETE RESTRICT NOT VALID"
                            if fks
                            else f"ALTER TABLE inventory_ledger DROP CONSTRAINT {name}"
                        )
            else:
                self.engine.dispose()  # new connections, with the pragma
        if ts != self.ts:
            self.ts = ts
            with self.engine.begin() as conn:
                conn.exec_driver_sql(
                    "CREATE INDEX ix_inventory_ledger_ts ON inventory_ledger (ts)" if ts else "DROP INDEX ix_inventory_ledger_ts"
                )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="main", help="the git revision of the code compared against")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--readings", type=int, default=10_000, help="readings per variant and round")
    ap.add_argument("--feed-batch", type=int, default=2000)
    ap.add_argument("--change-every", type=int, default=10)
    ap.add_argument("--postgres", metavar="URL", default=None)
    args = ap.parse_args()
    base_ledger, base_feed = load(args.base, "ledger"), load(args.base, "feed")
    new_apply = inventory.ledger._apply_shelf_batch  # noqa: SLF001
    # name, (ShelfFeed class, _apply_shelf_batch), foreign keys, ts index
    variants: list[tuple[str, tuple[Any, Any], bool, bool]] = [
        ("base", (base_feed.ShelfFeed, base_ledger._apply_shelf_batch), True, True),  # noqa: SLF001
        ("code", (ShelfFeed, new_apply), True, True),
        ("code - fks", (ShelfFeed, new_apply), False, True),
        ("code - fks, - ts", (ShelfFeed, new_apply), False, False),
    ]
    with database(args.postgres) as url:
        engine = create(url)
        try:
            db.upgrade(engine, "0004")
            t0 = time.perf_counter()
            built = fill(engine, 40, 250, 100)
            print(f"{engine.dialect.name}: {len(built['bins'])} bins, {built['rows']} ledger rows at revision "
                  f"{db.current(engine)} (filled in {time.perf_counter() - t0:.1f} s); base code: {args.base}")  # fmt: skip
            schema = Schema(engine)
            runs = []
            for k, (_, (feed_cls, _), _, _) in enumerate(variants):
                inventory.ledger._apply_shelf_batch = new_apply  # noqa: SLF001
                runs.append(FeedRun(engine, start=NOW + 10_000_000, feed=feed_cls, part=(k, len(variants))))
            rates: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for (name, (_, apply), fks, ts), run in zip(variants, runs, strict=True):
                    schema.set(fks, ts)
                    inventory.ledger._apply_shelf_batch = apply  # noqa: SLF001
                    for case, every in (("worst", 1), ("mix", args.change_every)):
                        rate, _ = run.rate(every, args.readings, args.feed_batch, 1)
                        rates.setdefault((name, case), []).append(rate)
            inventory.ledger._apply_shelf_batch = new_apply  # noqa: SLF001
            schema.set(True, True)
            first: dict[str, float] = {}
            print(f"  readings/s, median of {args.rounds} × {args.readings} per variant ({args.feed_batch} a batch, "
                  f"{len(built['bins']) // len(variants)} shelves each)")  # fmt: skip
            for case in ("worst", "mix"):
                label = "worst (every reading a change)" if case == "worst" else f"mix (1 in {args.change_every} a change)"
                print(f"  {label}")
                for name, *_ in variants:
                    m = statistics.median(rates[(name, case)])
                    first.setdefault(case, m)
                    runs_ = ", ".join(f"{r:,.0f}" for r in rates[(name, case)])
                    print(f"    {name:18} {m:9,.0f}  × {m / first[case]:.2f}   ({runs_})")
            bad = Ledger(engine).verify()
            print(f"  Ledger.verify() after: {len(bad)} bins disagree")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
