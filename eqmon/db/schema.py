"""The state database's tables (SQLAlchemy Core), on one ``MetaData`` with a naming convention
so that every constraint and index has a predictable name the migrations can refer to.

This describes the schema as the newest migration leaves it; the schema itself is only ever
created and changed by the migrations (``migrations/versions/``), never by ``create_all``.
Times are Unix seconds (double precision), as everywhere in eqmon; JSON is JSONB on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
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
