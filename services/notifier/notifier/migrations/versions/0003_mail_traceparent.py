"""mail_outbox.traceparent: the trace that queued a message, linked from the batch that sends it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mail_outbox", sa.Column("traceparent", sa.String(55)))


def downgrade() -> None:
    op.drop_column("mail_outbox", "traceparent")
