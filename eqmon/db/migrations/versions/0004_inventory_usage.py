"""The inventory's consumption rate, kept per bin on its on-hand row (inventory/usage.py):
``use_decayed`` (the exponentially weighted sum of its use, half-life one day) valued at
``use_at``, and ``first_at`` (its first ledger row), filled from the ledger for existing bins.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# inventory/usage.py's (a migration does not import floor 2; the values must agree).
HALF_LIFE_S = 86_400.0
HORIZON_S = 30 * HALF_LIFE_S  # older use weighs under 1e-9


def upgrade() -> None:
    with op.batch_alter_table("inventory_on_hand") as batch:
        batch.add_column(sa.Column("use_decayed", sa.Double(), server_default="0", nullable=False))
        batch.add_column(sa.Column("use_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("first_at", sa.Double(), server_default="0", nullable=False))
    rebuild(op.get_bind())


def rebuild(conn: sa.Connection) -> None:
    """Every bin's ``first_at`` and decayed use from its ledger rows."""
    lg = sa.table("inventory_ledger", *(sa.column(c) for c in ("ts", "item_id", "location_id", "kind", "delta")))
    oh = sa.table("inventory_on_hand", *(sa.column(c) for c in ("item_id", "location_id", "use_decayed", "use_at", "first_at")))
    first = sa.select(lg.c.item_id, lg.c.location_id, sa.func.min(lg.c.ts), sa.func.max(lg.c.ts))
    bins = conn.execute(first.group_by(lg.c.item_id, lg.c.location_id)).all()
    if not bins:
        return
    use: dict[tuple[int, int], tuple[float, float]] = {}
    newest = max(b[3] for b in bins)
    q = sa.select(lg.c.item_id, lg.c.location_id, lg.c.ts, lg.c.delta).where(
        lg.c.delta < 0, sa.or_(lg.c.kind == "issue", lg.c.kind == "shelf"), lg.c.ts >= newest - HORIZON_S
    )
    lam = math.log(2) / HALF_LIFE_S
    for item_id, location_id, ts, delta in conn.execute(q.order_by(lg.c.ts)):
        s, at = use.get((item_id, location_id), (0.0, ts))
        use[(item_id, location_id)] = (s * math.exp(-lam * (ts - at)) - delta, ts)
    rows = [
        {"i": i, "l": loc, "first": lo, "s": use.get((i, loc), (0.0, None))[0], "at": use.get((i, loc), (0.0, None))[1]}
        for i, loc, lo, _ in bins
    ]
    conn.execute(
        oh.update()
        .where(oh.c.item_id == sa.bindparam("i"), oh.c.location_id == sa.bindparam("l"))
        .values(first_at=sa.bindparam("first"), use_decayed=sa.bindparam("s"), use_at=sa.bindparam("at")),
        rows,
    )


def downgrade() -> None:
    with op.batch_alter_table("inventory_on_hand") as batch:
        batch.drop_column("first_at")
        batch.drop_column("use_at")
        batch.drop_column("use_decayed")
