"""The inventory's foundations: items, locations (a tree), bins (par settings of an item at a
location, its tare and smart shelf), the ledger (every change of stock, idempotent by key) and
on-hand per item and location (kept with the ledger in one transaction).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
LOCATION_KINDS = "kind IN ('building', 'floor', 'room', 'shelf', 'bin')"
LEDGER_KINDS = "kind IN ('receipt', 'issue', 'transfer', 'count', 'adjustment', 'shelf')"


def upgrade() -> None:
    op.create_table(
        "inventory_items",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("category", sa.String(100), server_default="", nullable=False),
        sa.Column("unit", sa.String(32), server_default="each", nullable=False),
        sa.Column("pack_size", sa.Integer(), server_default="1", nullable=False),
        sa.Column("unit_weight_g", sa.Double(), nullable=True),
        sa.Column("critical", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint("pack_size >= 1", name="ck_inventory_items_pack_size"),
        sa.CheckConstraint("unit_weight_g IS NULL OR unit_weight_g > 0", name="ck_inventory_items_unit_weight"),
        sa.PrimaryKeyConstraint("id", name="pk_inventory_items"),
        sa.UniqueConstraint("sku", name="uq_inventory_items_sku"),
    )
    op.create_table(
        "inventory_locations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.CheckConstraint(LOCATION_KINDS, name="ck_inventory_locations_kind"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["inventory_locations.id"],
            name="fk_inventory_locations_parent_id_inventory_locations", ondelete="RESTRICT",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name="pk_inventory_locations"),
        sa.UniqueConstraint("parent_id", "name", name="uq_inventory_locations_parent_id_name"),
    )
    op.create_index("ix_inventory_locations_parent_id", "inventory_locations", ["parent_id"])
    op.create_table(
        "inventory_bins",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("min_qty", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reorder_point", sa.Integer(), server_default="0", nullable=False),
        sa.Column("par", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reorder_qty", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lead_time_s", sa.Double(), server_default="0", nullable=False),
        sa.Column("tare_g", sa.Double(), server_default="0", nullable=False),
        sa.Column("shelf_device_id", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "min_qty >= 0 AND min_qty <= reorder_point AND reorder_point <= par", name="ck_inventory_bins_levels"
        ),
        sa.CheckConstraint(
            "reorder_qty >= 0 AND lead_time_s >= 0 AND tare_g >= 0", name="ck_inventory_bins_non_negative"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["inventory_items.id"], name="fk_inventory_bins_item_id_inventory_items", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["inventory_locations.id"],
            name="fk_inventory_bins_location_id_inventory_locations", ondelete="RESTRICT",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name="pk_inventory_bins"),
        sa.UniqueConstraint("item_id", "location_id", name="uq_inventory_bins_item_id_location_id"),
    )
    op.create_index("ix_inventory_bins_location_id", "inventory_bins", ["location_id"])
    op.create_index("ix_inventory_bins_shelf_device_id", "inventory_bins", ["shelf_device_id"])
    op.create_table(
        "inventory_ledger",
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
        sa.ForeignKeyConstraint(
            ["item_id"], ["inventory_items.id"], name="fk_inventory_ledger_item_id_inventory_items", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["location_id"], ["inventory_locations.id"],
            name="fk_inventory_ledger_location_id_inventory_locations", ondelete="RESTRICT",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name="pk_inventory_ledger"),
        sa.UniqueConstraint("idempotency_key", "leg", name="uq_inventory_ledger_idempotency_key_leg"),
    )
    op.create_index(
        "ix_inventory_ledger_item_id_location_id_id", "inventory_ledger", ["item_id", "location_id", "id"]
    )
    op.create_index("ix_inventory_ledger_ts", "inventory_ledger", ["ts"])
    op.create_table(
        "inventory_on_hand",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("location_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.CheckConstraint("quantity >= 0", name="ck_inventory_on_hand_quantity"),
        sa.ForeignKeyConstraint(
            ["item_id"], ["inventory_items.id"], name="fk_inventory_on_hand_item_id_inventory_items",
            ondelete="RESTRICT",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["location_id"], ["inventory_locations.id"],
            name="fk_inventory_on_hand_location_id_inventory_locations", ondelete="RESTRICT",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("item_id", "location_id", name="pk_inventory_on_hand"),
    )
    op.create_index("ix_inventory_on_hand_location_id", "inventory_on_hand", ["location_id"])


def downgrade() -> None:
    for table in ("inventory_on_hand", "inventory_ledger", "inventory_bins", "inventory_locations", "inventory_items"):
        op.drop_table(table)
