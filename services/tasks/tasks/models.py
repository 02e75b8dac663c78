import enum
import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class TaskStatus(enum.StrEnum):
    # Declaration order is the sort order (a PostgreSQL enum sorts by it).
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    OVERDUE = "overdue"


class TaskPriority(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


def _pg_enum(enum_class: type[enum.Enum], name: str) -> Enum:
    return Enum(enum_class, name=name, values_callable=lambda members: [m.value for m in members])


task_tags = Table(
    "task_tags",
    Base.metadata,
    Column("task_id", ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(50))
    color: Mapped[str] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("uq_tags_name_lower", func.lower(name), unique=True),)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TaskStatus] = mapped_column(_pg_enum(TaskStatus, "task_status"))
    priority: Mapped[TaskPriority] = mapped_column(_pg_enum(TaskPriority, "task_priority"))
    start_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notify_overdue: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    is_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Users live in identity; these are ids into the local directory, not foreign keys.
    created_by: Mapped[uuid.UUID]
    assigned_to: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    tags: Mapped[list[Tag]] = relationship(secondary=task_tags, lazy="raise", order_by=Tag.name)

    __table_args__ = (
        Index("ix_tasks_status_priority", "status", "priority"),
        Index("ix_tasks_created_by_status", "created_by", "status"),
        Index("ix_tasks_assigned_to_status", "assigned_to", "status"),
        Index("ix_tasks_created_at_id", "created_at", "id"),
        Index("ix_tasks_updated_at_id", "updated_at", "id"),
        Index("ix_tasks_title_id", "title", "id"),
        Index("ix_tasks_priority_id", "priority", "id"),
        Index("ix_tasks_status_id", "status", "id"),
        Index(
            "ix_tasks_due_sort",
            text("coalesce(due_date, '9999-12-31 00:00:00+00'::timestamptz)"),
            "id",
        ),
        # Only what the overdue sweep can still flip.
        Index(
            "ix_tasks_overdue_candidates",
            "due_date",
            postgresql_where=text("NOT is_deleted AND status IN ('todo', 'in_progress')"),
        ),
        Index(
            "ix_tasks_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "public.gin_trgm_ops"},
        ),
        Index(
            "ix_tasks_description_trgm",
            "description",
            postgresql_using="gin",
            postgresql_ops={"description": "public.gin_trgm_ops"},
        ),
    )
