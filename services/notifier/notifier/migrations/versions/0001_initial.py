"""notifications, mail outbox, preferences, reminders, task read model, user emails, clock
leases, deleted tasks, the user directory, outbox and inbox

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskhub_common.deleted_tasks import create_deleted_tasks
from taskhub_common.migrations import create_outbox_and_inbox, create_user_directory

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("is_read", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("cause_id", sa.Uuid(), nullable=False),
        sa.UniqueConstraint("cause_id", "user_id", name="uq_notifications_cause_user"),
    )
    op.create_index(
        "ix_notifications_user_created", "notifications", ["user_id", "created_at", "id"]
    )
    op.create_index(
        "ix_notifications_user_unread",
        "notifications",
        ["user_id", "created_at", "id"],
        postgresql_where=sa.text("NOT is_read"),
    )
    op.create_table(
        "task_states",
        sa.Column("task_id", sa.Uuid(), primary_key=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("due_date", sa.DateTime(timezone=True)),
        sa.Column("notify_overdue", sa.Boolean(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("assigned_to", sa.Uuid()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "user_emails",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "type_preferences",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("in_app", sa.Boolean(), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "quiet_hours",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("start", sa.Time()),
        sa.Column("end", sa.Time()),
    )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("cause_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("dedupe_key", sa.String(200), unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text()),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("failed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("cause_id", "user_id", name="uq_mail_outbox_cause_user"),
    )
    # The worker's claim reads only what is waiting.
    op.create_index(
        "ix_mail_outbox_pending",
        "mail_outbox",
        ["send_after"],
        postgresql_where=sa.text("sent_at IS NULL AND failed_at IS NULL"),
    )
    op.create_table(
        "reminders",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("remind_at", sa.DateTime(timezone=True)),
        sa.Column("before_due_minutes", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now()),
        sa.Column("fired_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_reminders_task_id", "reminders", ["task_id"])
    op.create_index("ix_reminders_user_id", "reminders", ["user_id", "remind_at"])
    op.create_index(
        "ix_reminders_due",
        "reminders",
        ["remind_at"],
        postgresql_where=sa.text("fired_at IS NULL"),
    )
    op.create_table(
        "clock_leases",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_deleted_tasks()
    create_user_directory()
    create_outbox_and_inbox()


def downgrade() -> None:
    for table in (
        "clock_leases",
        "reminders",
        "mail_outbox",
        "quiet_hours",
        "type_preferences",
        "user_emails",
        "task_states",
        "notifications",
    ):
        op.drop_table(table)
