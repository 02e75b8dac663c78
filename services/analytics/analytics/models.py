"""The read model: one row per task as its events last described it, and the history of its
status and assignee, both fed only by task.* events (and the backfill from the tasks export)."""

import uuid
from datetime import datetime

from sqlalchemy import ARRAY, DateTime, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class TaskFact(Base):
    __tablename__ = "task_facts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(20))
    due_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Sticky: once an event says deleted, no older or later event brings the task back.
    is_deleted: Mapped[bool]
    created_by: Mapped[uuid.UUID]
    assigned_to: Mapped[uuid.UUID | None]
    # Tag names (the filters and the export need nothing else of a tag).
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The task's own updated_at: the version. A row only takes an event's fields when they are
    # newer, so a late or repeated event changes nothing.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The first time any event showed the task in progress (the start of its cycle time).
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_task_facts_created_at", "created_at"),
        Index("ix_task_facts_completed_at", "completed_at"),
        Index("ix_task_facts_assigned_to", "assigned_to"),
    )


class TaskHistory(Base):
    """Append-only: the task's status and assignee at each version. Keyed by version, so events
    arriving twice or out of order leave the same set of rows."""

    __tablename__ = "task_history"

    task_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))
    assigned_to: Mapped[uuid.UUID | None]


class Backfill(Base):
    """One row per finished backfill from the tasks export; none yet means the next start runs
    one."""

    __tablename__ = "backfills"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tasks: Mapped[int]
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
