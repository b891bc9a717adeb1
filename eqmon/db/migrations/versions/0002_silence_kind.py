"""Silences gain a kind: ``silence`` (alerts are kept but nobody is notified) or
``maintenance`` (the device is being worked on: it raises nothing and its readings are marked).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("silences") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="silence"))
        batch.create_check_constraint("kind", "kind IN ('silence', 'maintenance')")


def downgrade() -> None:
    with op.batch_alter_table("silences") as batch:
        batch.drop_constraint(op.f("ck_silences_kind"), type_="check")
        batch.drop_column("kind")
