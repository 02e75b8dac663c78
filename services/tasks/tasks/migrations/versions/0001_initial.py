"""tasks, tags, the user directory, outbox and inbox

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from taskhub_common.migrations import create_outbox_and_inbox, create_user_directory

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUS = postgresql.ENUM("todo", "in_progress", "completed", "overdue", name="task_status")
PRIORITY = postgresql.ENUM("low", "medium", "high", "urgent", name="task_priority")


def upgrade() -> None:
    # Trigram indexes make `search` (ILIKE '%…%') an index scan. One database-wide extension.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
    op.create_table(
        "tags",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("color", sa.String(7), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("uq_tags_name_lower", "tags", [sa.text("lower(name)")], unique=True)
    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("priority", PRIORITY, nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True)),
        sa.Column("due_date", sa.DateTime(timezone=True)),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("notify_overdue", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("is_deleted", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("assigned_to", sa.Uuid()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_tasks_status_priority", "tasks", ["status", "priority"])
    op.create_index("ix_tasks_created_by_status", "tasks", ["created_by", "status"])
    op.create_index("ix_tasks_assigned_to_status", "tasks", ["assigned_to", "status"])
    op.create_index("ix_tasks_created_at_id", "tasks", ["created_at", "id"])
    op.create_index("ix_tasks_updated_at_id", "tasks", ["updated_at", "id"])
    op.create_index(
        "ix_tasks_overdue_candidates",
        "tasks",
        ["due_date"],
        postgresql_where=sa.text("NOT is_deleted AND status IN ('todo', 'in_progress')"),
    )
    op.create_index(
        "ix_tasks_title_trgm",
        "tasks",
        ["title"],
        postgresql_using="gin",
        postgresql_ops={"title": "public.gin_trgm_ops"},
    )
    op.create_index(
        "ix_tasks_description_trgm",
        "tasks",
        ["description"],
        postgresql_using="gin",
        postgresql_ops={"description": "public.gin_trgm_ops"},
    )
    op.create_table(
        "task_tags",
        sa.Column(
            "task_id", sa.Uuid(), sa.ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "tag_id", sa.Uuid(), sa.ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_index("ix_task_tags_tag_id", "task_tags", ["tag_id"])
    create_user_directory()
    create_outbox_and_inbox()


def downgrade() -> None:
    op.drop_table("task_tags")
    op.drop_table("tasks")
    op.drop_table("tags")
    STATUS.drop(op.get_bind())
    PRIORITY.drop(op.get_bind())
