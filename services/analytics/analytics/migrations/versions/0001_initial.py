"""the task read model, its history, backfills, the user directory, outbox, inbox, event queue

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from taskhub_common.migrations import create_outbox_and_inbox, create_user_directory

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_facts",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.String(20), nullable=False),
        sa.Column("due_date", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("assigned_to", sa.Uuid()),
        sa.Column("tags", sa.ARRAY(sa.String(50)), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_task_facts_created_at", "task_facts", ["created_at"])
    op.create_index("ix_task_facts_completed_at", "task_facts", ["completed_at"])
    op.create_index("ix_task_facts_assigned_to", "task_facts", ["assigned_to"])
    op.create_table(
        "task_history",
        sa.Column("task_id", sa.Uuid(), primary_key=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("assigned_to", sa.Uuid()),
    )
    op.create_table(
        "backfills",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_user_directory()
    create_outbox_and_inbox()


def downgrade() -> None:
    op.drop_table("backfills")
    op.drop_table("task_history")
    op.drop_table("task_facts")
