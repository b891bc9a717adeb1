"""The state database's first schema: alerts (moved from alerts.sqlite) and their events,
silences, the notification outbox, the audit log, and eqmon_meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
OPEN = "state != 'resolved'"


def upgrade() -> None:
    op.create_table(
        "eqmon_meta",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_eqmon_meta"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(200), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("resolved_at", sa.Double(), nullable=True),
        sa.Column("acknowledged_at", sa.Double(), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("extra", JSON, nullable=False),
        sa.CheckConstraint("state IN ('active', 'acknowledged', 'resolved')", name="ck_alerts_state"),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index(
        "ix_alerts_open", "alerts", ["started_at"], sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN)
    )
    op.create_index("ix_alerts_started_at", "alerts", ["started_at"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_alert_events_alert_id_alerts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_alert_id_ts", "alert_events", ["alert_id", "ts"])
    op.create_index("ix_alert_events_ts", "alert_events", ["ts"])
    op.create_table(
        "silences",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("rule_id", sa.String(200), nullable=True),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.Double(), nullable=False),
        sa.Column("ends_at", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("cancelled_at", sa.Double(), nullable=True),
        sa.CheckConstraint("ends_at > starts_at", name="ck_silences_window"),
        sa.CheckConstraint(
            "device_id IS NOT NULL OR location IS NOT NULL OR rule_id IS NOT NULL", name="ck_silences_matcher"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_silences"),
    )
    op.create_index("ix_silences_ends_at", "silences", ["ends_at"])
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.Double(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed')", name="ck_notification_outbox_state"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name="fk_notification_outbox_alert_id_alerts", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notification_outbox"),
        sa.UniqueConstraint("message_id", name="uq_notification_outbox_message_id"),
    )
    op.create_index(
        "ix_notification_outbox_state_next_attempt_at", "notification_outbox", ["state", "next_attempt_at"]
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_index("ix_audit_log_subject_ts", "audit_log", ["subject", "ts"])


def downgrade() -> None:
    for table in ("audit_log", "notification_outbox", "silences", "alert_events", "alerts", "eqmon_meta"):
        op.drop_table(table)
