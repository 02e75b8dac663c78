"""The read model: one row per task as its events last described it, and the history of its
status and assignee, both fed only by task.* events (and the backfill from the tasks export)."""

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Computed, DateTime, Index, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
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
    # Hours from the start (started_at, or creation) to completion, for completed tasks with a
    # completion time; kept by PostgreSQL. Its index gives each assignee's median in a few
    # index reads.
    cycle_hours: Mapped[float | None] = mapped_column(
        Computed(
            "CASE WHEN status = 'completed' AND completed_at IS NOT NULL THEN"
            " (extract(epoch FROM completed_at - coalesce(started_at, created_at)) / 3600)"
            "::float8 END",
            persisted=True,
        )
    )

    __table_args__ = (
        Index("ix_task_facts_created_at", "created_at"),
        Index("ix_task_facts_completed_at", "completed_at"),
        Index("ix_task_facts_assigned_to", "assigned_to"),
        # The tag filter (`tags @> ARRAY[tag]`).
        Index("ix_task_facts_tags", "tags", postgresql_using="gin"),
        # Open tasks past due count as overdue at read time: the sweep keeps them few. The
        # predicates read as the queries' (`is_deleted IS false`), or the planner cannot use them.
        Index(
            "ix_task_facts_open_due",
            "due_date",
            postgresql_where=text(
                "is_deleted IS false AND due_date IS NOT NULL AND status IN ('todo', 'in_progress')"
            ),
        ),
        # The completed tasks of each assignee in cycle-time order: a median is the middle
        # one or two, read past the others in the index (with the filters' columns included).
        Index(
            "ix_task_facts_assignee_cycle",
            "assigned_to",
            "cycle_hours",
            postgresql_include=["created_by", "created_at", "tags"],
            postgresql_where=text(
                "is_deleted IS false AND cycle_hours IS NOT NULL AND assigned_to IS NOT NULL"
            ),
        ),
    )


class CountKey:
    """The fields a count is kept by, shared by task_counts and task_tag_counts."""

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_by: Mapped[uuid.UUID]
    assigned_to: Mapped[uuid.UUID | None]
    created_day: Mapped[date]
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[str] = mapped_column(String(20))
    # The UTC day of completion, for completed tasks with a completion time (else NULL).
    completed_day: Mapped[date | None]
    # Completed tasks only: 'none' (no due date), 'on_time' (completed by it) or 'late'.
    due_kind: Mapped[str | None] = mapped_column(String(10))
    tasks: Mapped[int]


COUNT_KEY = (
    "created_by",
    "assigned_to",
    "created_day",
    "status",
    "priority",
    "completed_day",
    "due_kind",
)


class TaskCount(CountKey, Base):
    """How many visible tasks share these fields: what overview, performance, trends and
    burn-up add up instead of reading every task. Kept exact by triggers on task_facts
    (migration 0002): each statement that inserts or updates facts adds its new rows' keys and
    subtracts its old rows' keys, in the same transaction. A deleted task counts nowhere."""

    __tablename__ = "task_counts"
    __table_args__ = (
        Index("ux_task_counts_key", *COUNT_KEY, unique=True, postgresql_nulls_not_distinct=True),
    )


class TaskTagCount(CountKey, Base):
    """task_counts per tag: a task counts once under each of its tags (its tag names are
    distinct). Kept by the same triggers, in the same statement (migration 0003); what the
    answers filtered by a tag add up."""

    __tablename__ = "task_tag_counts"

    tag: Mapped[str] = mapped_column(String(50))

    __table_args__ = (
        Index(
            "ux_task_tag_counts_key",
            "tag",
            *COUNT_KEY,
            unique=True,
            postgresql_nulls_not_distinct=True,
        ),
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
