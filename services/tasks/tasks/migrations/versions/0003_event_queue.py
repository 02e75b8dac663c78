"""the embedded bus's event queue (taskhub_common.local_bus)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

from taskhub_common.migrations import create_outbox_and_inbox

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_outbox_and_inbox()  # adds event_queue; the outbox and inbox exist already


def downgrade() -> None:
    op.drop_table("event_queue")
