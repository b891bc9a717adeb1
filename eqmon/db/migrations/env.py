"""Alembic's environment for the state database. eqmon runs it only programmatically
(eqmon/db/migrate.py) and hands it an open connection in a transaction."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from eqmon.db.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("eqmon's migrations run through eqmon/db/migrate.py (`eqmon db upgrade`)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate batch operations
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
