"""Schema migrations (Alembic), run programmatically: no alembic.ini, the scripts are package
data in ``migrations/``. ``upgrade(engine)`` runs at every start-up (before anything reads the
state) and from ``eqmon db upgrade``; a database whose revision this eqmon does not know (a newer
eqmon migrated it) is refused with ``SchemaTooNew``, never touched.

A new migration: change ``schema.py``, then write ``migrations/versions/NNNN_what.py`` (from
``migrations/script.py.mako``: ``revision``, ``down_revision``, ``upgrade()``, ``downgrade()``;
``alembic.autogenerate.produce_migrations`` against a migrated database drafts the operations).
tests/test_state_db.py checks on both databases that the migrations produce exactly
``schema.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from .engine import DatabaseUnavailable, StateDatabaseError, redacted

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Two eqmon processes starting on one PostgreSQL database migrate one after the other.
_PG_LOCK = 0x6571_6D6F6E  # "eqmon"


class SchemaTooNew(StateDatabaseError):
    """The database is at a revision this eqmon's migrations do not know."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    rev = _script().get_current_head()
    assert rev is not None, "no migrations shipped"
    return rev


HEAD = head()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _check_known(engine: Engine, rev: str | None) -> None:
    if rev is None:
        return
    script = _script()
    try:
        known = script.get_revision(rev) is not None
    except Exception:  # alembic raises for an id it has never heard of
        known = False
    if not known:
        raise SchemaTooNew(
            f"state database {redacted(engine)} is at schema revision {rev}, which this eqmon "
            f"does not know (its newest is {HEAD}): a newer eqmon has migrated it; run that "
            "version, or restore the backup taken before the upgrade"
        )


def current(engine: Engine) -> str | None:
    """The database's revision (None: empty, never migrated); ``SchemaTooNew`` when unknown."""
    try:
        with engine.connect() as conn:
            rev = _current(conn)
    except SQLAlchemyError as exc:
        raise _unavailable(engine, exc) from exc
    _check_known(engine, rev)
    return rev


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target`` (the newest by default) in one transaction; returns the revisions
    before and after. Raises ``SchemaTooNew`` (nothing done) or ``DatabaseUnavailable``."""
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            before = _current(conn)
            _check_known(engine, before)
            if before != HEAD or target != "head":
                command.upgrade(config(conn), target)
            after = _current(conn)
    except StateDatabaseError:
        raise
    except SQLAlchemyError as exc:
        raise _unavailable(engine, exc) from exc
    if before != after:
        log.info("state database %s: schema %s -> %s", redacted(engine), before or "empty", after)
    assert after is not None
    return before, after


def downgrade(engine: Engine, target: str) -> None:
    """Back to ``target`` ("base": empty). For tests and for undoing a migration by hand."""
    with engine.begin() as conn:
        _check_known(engine, _current(conn))
        command.downgrade(config(conn), target)


def _unavailable(engine: Engine, exc: SQLAlchemyError) -> DatabaseUnavailable:
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return DatabaseUnavailable(
        f"cannot use the state database {redacted(engine)}: {detail[0] if detail else type(exc).__name__}"
    )
