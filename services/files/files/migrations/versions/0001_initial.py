"""files, deleted tasks, the user directory, outbox and inbox

Revision ID: 0001
Revises:
Create Date: 2026-11-27
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


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(100), nullable=False),
        sa.Column("original_filename", sa.String(255), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("storage_key", sa.String(500), nullable=False, unique=True),
        sa.Column("uploaded_by", sa.Uuid(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_files_task_id_created_at",
        "files",
        ["task_id", "created_at", "id"],
        postgresql_where=sa.text("NOT is_deleted"),
    )
    create_deleted_tasks()
    create_user_directory()
    create_outbox_and_inbox()


def downgrade() -> None:
    op.drop_table("deleted_tasks")
    op.drop_table("files")
