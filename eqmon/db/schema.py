"""The state database's tables (SQLAlchemy Core), on one ``MetaData`` with a naming convention
so that every constraint and index has a predictable name the migrations can refer to.

This describes the schema as the newest migration leaves it; the schema itself is only ever
created and changed by the migrations (``migrations/versions/``), never by ``create_all``.
Times are Unix seconds (double precision), as everywhere in eqmon; JSON is JSONB on PostgreSQL.
The inventory's tables (``inventory_*``) are used by ``inventory/`` (docs/inventory.md).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

Json = JSON().with_variant(JSONB(), "postgresql")

OPEN = "state != 'resolved'"  # the predicate of the open-alerts index and of its query

# Small key/value facts about the database itself (e.g. that alerts.sqlite was imported).
meta = Table(
    "eqmon_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("rule_id", String(200), nullable=False),
    Column("device_id", String(200), nullable=False),
    Column("metric", String(200), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("value", Double),
    Column("resolved_at", Double),
    Column("acknowledged_at", Double),
    Column("acknowledged_by", Text),
    Column("extra", Json, nullable=False),
    CheckConstraint("state IN ('active', 'acknowledged', 'resolved')", name="state"),
    # Open alerts (few, read at every start and by the API): a partial index.
    Index(
        "ix_alerts_open",
        "started_at",
        sqlite_where=text(OPEN),
        postgresql_where=text(OPEN),
    ),
    # History, newest first.
    Index("ix_alerts_started_at", "started_at"),
)

# Every raise, change, acknowledgement and resolution of an alert: one row each.
alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("ts", Double, nullable=False),
    Column("kind", String(32), nullable=False),  # raised, changed, acknowledged, resolved, reopened
    Column("actor", Text, nullable=False),  # "eqmon" for the engine; a person for acknowledgements
    Column("note", Text),
    Index("ix_alert_events_alert_id_ts", "alert_id", "ts"),
    Index("ix_alert_events_ts", "ts"),
)

# Silences: no notification for alerts matching device, location and/or rule in a time window;
# a maintenance window (kind "maintenance"): its devices raise nothing at all.
silences = Table(
    "silences",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False, server_default="silence"),
    Column("device_id", String(200)),
    Column("location", Text),
    Column("rule_id", String(200)),
    Column("owner", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("starts_at", Double, nullable=False),
    Column("ends_at", Double, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("cancelled_at", Double),
    CheckConstraint("ends_at > starts_at", name="window"),
    CheckConstraint("kind IN ('silence', 'maintenance')", name="kind"),
    CheckConstraint(
        "device_id IS NOT NULL OR location IS NOT NULL OR rule_id IS NOT NULL", name="matcher"
    ),
    Index("ix_silences_ends_at", "ends_at"),
)

# Notifications to send (transactional outbox): written with the alert change, sent by a worker.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(64), ForeignKey("alerts.id", ondelete="SET NULL")),
    Column("channel", String(32), nullable=False),  # email, sms, webhook …
    Column("recipient", Text, nullable=False),
    Column("payload", Json, nullable=False),
    Column("message_id", String(200), nullable=False, unique=True),  # stable: sent at most once
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", Text),
    Column("created_at", Double, nullable=False),
    Column("sent_at", Double),
    CheckConstraint("state IN ('pending', 'sent', 'failed')", name="state"),
    Index("ix_notification_outbox_state_next_attempt_at", "state", "next_attempt_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(100), nullable=False),
    Column("subject", Text, nullable=False),
    Column("detail", Json, nullable=False),
    Index("ix_audit_log_ts", "ts"),
    Index("ix_audit_log_subject_ts", "subject", "ts"),
)


# -- inventory (inventory/: docs/inventory.md) ------------------------------------------------

# 64-bit ids where rows accumulate (the ledger); SQLite's INTEGER PRIMARY KEY is already 64 bits
# (and only that exact type autoincrements there).
BigId = BigInteger().with_variant(Integer(), "sqlite")

LOCATION_KINDS = ("building", "floor", "room", "shelf", "bin")
LEDGER_KINDS = ("receipt", "issue", "transfer", "count", "adjustment", "shelf")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


# What is stocked: quantities are whole units (``unit``: "each", "pair", "ream" …); a pack
# (``pack_size`` units) is what is ordered and brought; ``unit_weight_g`` turns a smart shelf's
# weight into a count (None: not weighed).
inventory_items = Table(
    "inventory_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sku", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("category", String(100), nullable=False, server_default=""),
    Column("unit", String(32), nullable=False, server_default="each"),
    Column("pack_size", Integer, nullable=False, server_default="1"),
    Column("unit_weight_g", Double),
    Column("critical", Boolean, nullable=False, server_default=false()),
    CheckConstraint("pack_size >= 1", name="pack_size"),
    CheckConstraint("unit_weight_g IS NULL OR unit_weight_g > 0", name="unit_weight"),
)

# Where stock is: a tree (building > floor > room > shelf > bin); a root has no parent.
inventory_locations = Table(
    "inventory_locations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent_id", Integer, ForeignKey("inventory_locations.id", ondelete="RESTRICT")),
    Column("kind", String(16), nullable=False),
    Column("name", Text, nullable=False),
    CheckConstraint(_in("kind", LOCATION_KINDS), name="kind"),
    UniqueConstraint("parent_id", "name"),
    Index("ix_inventory_locations_parent_id", "parent_id"),
)

# Par settings of one item at one location (its "bin"): minimum <= reorder point <= par
# (the maximum); the bin's tare and the smart shelf weighing it, if any.
inventory_bins = Table(
    "inventory_bins",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", Integer, ForeignKey("inventory_items.id", ondelete="RESTRICT"), nullable=False),
    Column("location_id", Integer, ForeignKey("inventory_locations.id", ondelete="RESTRICT"), nullable=False),
    Column("min_qty", Integer, nullable=False, server_default="0"),
    Column("reorder_point", Integer, nullable=False, server_default="0"),
    Column("par", Integer, nullable=False, server_default="0"),
    Column("reorder_qty", Integer, nullable=False, server_default="0"),
    Column("lead_time_s", Double, nullable=False, server_default="0"),
    Column("tare_g", Double, nullable=False, server_default="0"),
    Column("shelf_device_id", String(200)),
    UniqueConstraint("item_id", "location_id"),
    CheckConstraint("min_qty >= 0 AND min_qty <= reorder_point AND reorder_point <= par", name="levels"),
    CheckConstraint("reorder_qty >= 0 AND lead_time_s >= 0 AND tare_g >= 0", name="non_negative"),
    Index("ix_inventory_bins_location_id", "location_id"),
    Index("ix_inventory_bins_shelf_device_id", "shelf_device_id"),
)

# Every change of stock, one row per item and location changed (a transfer: two rows, leg 0 out
# of the source and leg 1 into the destination, under one idempotency key). ``delta`` is signed;
# ``balance`` is the on-hand after the row; ``counted`` is what a count or a shelf reading found
# (``delta`` is then the difference it made). A key is applied once: (key, leg) is unique.
inventory_ledger = Table(
    "inventory_ledger",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    # No foreign keys (migration 0005): the bin's on-hand row, created or locked in the row's
    # transaction and never deleted, holds the item and the location with its own.
    Column("item_id", Integer, nullable=False),
    Column("location_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("delta", Integer, nullable=False),
    Column("balance", Integer, nullable=False),
    Column("counted", Integer),
    Column("who", Text, nullable=False),
    Column("why", Text, nullable=False, server_default=""),
    Column("idempotency_key", String(200), nullable=False),
    Column("leg", Integer, nullable=False, server_default="0"),
    UniqueConstraint("idempotency_key", "leg"),
    CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
    CheckConstraint("balance >= 0", name="balance"),
    CheckConstraint("leg = 0 OR (leg = 1 AND kind = 'transfer')", name="leg"),
    CheckConstraint(
        "(counted IS NULL) = (kind NOT IN ('count', 'shelf')) AND (counted IS NULL OR counted = balance)",
        name="counted",
    ),
    # One bin's history, in order (and its sum). Nothing reads the ledger by time (0005).
    Index("ix_inventory_ledger_item_id_location_id_id", "item_id", "location_id", "id"),
)

# On-hand per item and location, changed in the same transaction as the ledger rows (and the
# row locked by every write of that bin): always the sum of the bin's ledger rows. With it the
# bin's use (migration 0004, inventory/usage.py): ``use_decayed`` the exponentially weighted sum
# of its use valued at ``use_at`` (None: no use yet), ``first_at`` its first ledger row's time.
inventory_on_hand = Table(
    "inventory_on_hand",
    metadata,
    Column("item_id", Integer, ForeignKey("inventory_items.id", ondelete="RESTRICT"), primary_key=True),
    Column("location_id", Integer, ForeignKey("inventory_locations.id", ondelete="RESTRICT"), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("use_decayed", Double, nullable=False, server_default="0"),
    Column("use_at", Double),
    Column("first_at", Double, nullable=False, server_default="0"),
    CheckConstraint("quantity >= 0", name="quantity"),
    Index("ix_inventory_on_hand_location_id", "location_id"),
)


# -- users and API tokens (dashboard_api/auth.py: docs/api.md, "Users and roles") ------------

ROLES = ("coordinator", "supply", "viewer", "admin")
TOKEN_KINDS = ("session", "api")

# People who log in to the API and the dashboard. ``password_hash`` is argon2id (PHC string);
# None for a machine account that only holds API tokens. A disabled user cannot log in and its
# tokens stop working. No patient data: a user is a member of staff, by name and role.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", Text),
    Column("created_at", Double, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    CheckConstraint(_in("role", ROLES), name="role"),
)

# Bearer tokens: ``session`` tokens come from a login and expire within hours; ``api`` tokens are
# made by an admin for a machine and last until revoked (or their ``expires_at``). Only the
# SHA-256 of a token is kept: a copy of the database does not give working tokens.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("label", String(100), nullable=False, server_default=""),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double),
    Column("revoked_at", Double),
    CheckConstraint(_in("kind", TOKEN_KINDS), name="kind"),
    Index("ix_api_tokens_user_id", "user_id"),
)
