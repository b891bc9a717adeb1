"""The ledger's write path (docs/performance.md, "Inventory"): its two foreign keys (to items and
locations) and its ``ts`` index are dropped.

* Foreign keys: every ledger row is written in the transaction that creates or locks its bin's
  ``inventory_on_hand`` row, whose own foreign keys (``ON DELETE RESTRICT``) hold the item and
  the location, and no on-hand row is ever deleted; so the ledger's were checked a second time,
  row by row (on PostgreSQL about half of a batch insert's time).
* ``ts``: nothing reads the ledger by time (one bin's history is read by (item, location, id);
  the use is kept on the on-hand row), and every index is written on every row.

On SQLite the table is copied without them (the time of copying the ledger: seconds for a
million rows).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LEDGER_KINDS = "kind IN ('receipt', 'issue', 'transfer', 'count', 'adjustment', 'shelf')"
FK_ITEM = "fk_inventory_ledger_item_id_inventory_items"
FK_LOCATION = "fk_inventory_ledger_location_id_inventory_locations"


def _ledger(fks: bool) -> sa.Table:
    """The ledger as 0003 made it (without its ``ts`` index; ``fks``: with its foreign keys),
    for SQLite's copy of the table: named, so that nothing is left to reflection (which loses
    the CHECK constraints)."""
    md = sa.MetaData()
    sa.Table("inventory_items", md, sa.Column("id", sa.Integer(), primary_key=True))
    sa.Table("inventory_locations", md, sa.Column("id", sa.Integer(), primary_key=True))
    fk = [
        sa.ForeignKeyConstraint(["item_id"], ["inventory_items.id"], name=FK_ITEM, ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["location_id"], ["inventory_locations.id"], name=FK_LOCATION, ondelete="RESTRICT"),
    ]  # fmt: skip
    return sa.Table(
        "inventory_ledger",
        md,
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("balance", sa.Integer(), nullable=False),
        sa.Column("counted", sa.Integer(), nullable=True),
        sa.Column("who", sa.Text(), nullable=False),
        sa.Column("why", sa.Text(), server_default="", nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("leg", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(LEDGER_KINDS, name="ck_inventory_ledger_kind"),
        sa.CheckConstraint("balance >= 0", name="ck_inventory_ledger_balance"),
        sa.CheckConstraint("leg = 0 OR (leg = 1 AND kind = 'transfer')", name="ck_inventory_ledger_leg"),
        sa.CheckConstraint(
            "(counted IS NULL) = (kind NOT IN ('count', 'shelf')) AND (counted IS NULL OR counted = balance)",
            name="ck_inventory_ledger_counted",
        ),
        *(fk if fks else []),
        sa.PrimaryKeyConstraint("id", name="pk_inventory_ledger"),
        sa.UniqueConstraint("idempotency_key", "leg", name="uq_inventory_ledger_idempotency_key_leg"),
        sa.Index("ix_inventory_ledger_item_id_location_id_id", "item_id", "location_id", "id"),
    )


def upgrade() -> None:
    op.drop_index("ix_inventory_ledger_ts", table_name="inventory_ledger")
    with op.batch_alter_table("inventory_ledger", copy_from=_ledger(fks=True)) as batch:
        batch.drop_constraint(FK_ITEM, type_="foreignkey")
        batch.drop_constraint(FK_LOCATION, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("inventory_ledger", copy_from=_ledger(fks=False)) as batch:
        batch.create_foreign_key(FK_ITEM, "inventory_items", ["item_id"], ["id"], ondelete="RESTRICT")
        batch.create_foreign_key(FK_LOCATION, "inventory_locations", ["location_id"], ["id"], ondelete="RESTRICT")
    op.create_index("ix_inventory_ledger_ts", "inventory_ledger", ["ts"])
