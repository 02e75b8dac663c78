"""indexes for every sort order of the task list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (sort expression, id): a page in any sort order is an index scan, not a sort of the table.
SORT_INDEXES = {
    "ix_tasks_title_id": ["title", "id"],
    "ix_tasks_priority_id": ["priority", "id"],
    "ix_tasks_status_id": ["status", "id"],
    "ix_tasks_due_sort": [
        sa.text("coalesce(due_date, '9999-12-31 00:00:00+00'::timestamptz)"),
        "id",
    ],
}


def upgrade() -> None:
    for name, columns in SORT_INDEXES.items():
        op.create_index(name, "tasks", columns)


def downgrade() -> None:
    for name in SORT_INDEXES:
        op.drop_index(name, "tasks")
