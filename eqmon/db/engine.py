"""The state database's engine: one per process, built from the site file's ``database``.

SQLite (the default: ``state.sqlite`` in the data directory): WAL (readers never wait for the
writer), foreign keys on, a busy timeout instead of an immediate "database is locked", and real
transactions — pysqlite's own handling would begin them late and commit DDL on its own, so the
driver is put in autocommit mode and every SQLAlchemy transaction emits its ``BEGIN`` (``BEGIN
IMMEDIATE`` for ``writing()``: a transaction that reads then writes cannot then fail half-way on
another writer). PostgreSQL: psycopg 3, a small pool whose connections are checked before use and
recycled, a connect timeout, ``application_name=eqmon``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

from eqmon.config import Database

DEFAULT_FILE = "state.sqlite"
SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 10
_WRITE = "eqmon_write"


class StateDatabaseError(Exception):
    """The state database cannot be used; the message is one line naming it."""


class DatabaseUnavailable(StateDatabaseError):
    """It cannot be reached or opened."""


def database_url(cfg: Database, data_dir: Path) -> URL:
    """The URL to connect to: the default SQLite file, a relative SQLite path under
    ``data_dir``, ``postgresql://`` as psycopg 3, the password from ``password_env``."""
    if cfg.url is None:
        return URL.create("sqlite", database=str((data_dir / DEFAULT_FILE).resolve()))
    url = make_url(cfg.url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or DEFAULT_FILE)
        return url.set(database=str(path if path.is_absolute() else (data_dir / path).resolve()))
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    password = cfg.password()
    return url if password is None else url.set(password=password)


def redacted(target: Engine | URL | str) -> str:
    """The database as it may be shown in a log line or an error: never its password."""
    url = target.url if isinstance(target, Engine) else make_url(target)
    return url.render_as_string(hide_password=True)


def open_engine(cfg: Database, data_dir: Path) -> Engine:
    """The engine for ``cfg`` (nothing is connected yet)."""
    return create(database_url(cfg, data_dir), echo=cfg.echo, pool_size=cfg.pool_size)


def create(url: URL | str, *, echo: bool = False, pool_size: int = 5) -> Engine:
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a server restarted under us costs one retry, not an error
        pool_recycle=1800,
        pool_timeout=30,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "eqmon"},
    )


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below emits BEGIN
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


@contextlib.contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction (committed on exit, rolled back on an exception). On SQLite it
    takes the write lock at once (``BEGIN IMMEDIATE``), so reading then writing in it cannot fail
    on another writer half-way; the busy timeout waits for that writer instead."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn
