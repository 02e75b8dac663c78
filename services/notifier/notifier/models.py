import enum
import uuid
from datetime import datetime, time

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class NotificationType(enum.StrEnum):
    TASK_ASSIGNED = "task_assigned"
    COMMENT_ADDED = "comment_added"
    TASK_OVERDUE = "task_overdue"
    TASK_REMINDER = "task_reminder"


class Notification(Base):
    """One in-app notice to one user."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Users and tasks live in other services: ids, not foreign keys.
    user_id: Mapped[uuid.UUID]
    task_id: Mapped[uuid.UUID | None]
    type: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # What caused it: the event's id (or the reminder's). One notice per cause and user, however
    # often the event is delivered and however many replicas handle it.
    cause_id: Mapped[uuid.UUID]

    __table_args__ = (
        UniqueConstraint("cause_id", "user_id", name="uq_notifications_cause_user"),
        # The list, newest first, and its keyset pages.
        Index("ix_notifications_user_created", "user_id", "created_at", "id"),
        # Unread notices only: the unread count and the unread list read this small index.
        Index(
            "ix_notifications_user_unread",
            "user_id",
            "created_at",
            "id",
            postgresql_where=text("NOT is_read"),
        ),
    )


class TaskState(Base):
    """The notifier's read model of a task, from task.* events: just what deciding whom to tell
    needs. An older event (by the task's updated_at) never overwrites a newer one."""

    __tablename__ = "task_states"

    task_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))
    due_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notify_overdue: Mapped[bool]
    is_deleted: Mapped[bool]
    created_by: Mapped[uuid.UUID]
    assigned_to: Mapped[uuid.UUID | None]
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserEmail(Base):
    """Where a user's mail goes, from user.* events. Private: never in an API response."""

    __tablename__ = "user_emails"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TypePreference(Base):
    """A user's channels for one notification type; no row: both on."""

    __tablename__ = "type_preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    in_app: Mapped[bool]
    email: Mapped[bool]


class QuietHours(Base):
    """A user's time zone and quiet hours, during which email waits; no row: UTC, none."""

    __tablename__ = "quiet_hours"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64))
    # Local times; start after end spans midnight; both null: no quiet hours.
    start: Mapped[time | None] = mapped_column(Time)
    end: Mapped[time | None] = mapped_column(Time)


class MailMessage(Base):
    """The mail outbox: written in the notice's transaction, sent by the mail worker."""

    __tablename__ = "mail_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    cause_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID]
    task_id: Mapped[uuid.UUID | None]
    type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    # Set where one message must go once whatever the causes (an overdue task, per due date).
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Not sent before: the end of the recipient's quiet hours, or the next retry.
    send_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Given up after MAIL_MAX_ATTEMPTS; kept for inspection.
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The trace that queued the message: the batch that sends it links to it.
    traceparent: Mapped[str | None] = mapped_column(String(55))

    __table_args__ = (
        UniqueConstraint("cause_id", "user_id", name="uq_mail_outbox_cause_user"),
        Index(
            "ix_mail_outbox_pending",
            "send_after",
            postgresql_where=text("sent_at IS NULL AND failed_at IS NULL"),
        ),
    )


class Reminder(Base):
    """A user's reminder about a task: at a time, or some minutes before the task's due date."""

    __tablename__ = "reminders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    task_id: Mapped[uuid.UUID]
    user_id: Mapped[uuid.UUID]
    # Null for a relative reminder of a task whose due date is not known (yet).
    remind_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    before_due_minutes: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_reminders_task_id", "task_id"),
        Index("ix_reminders_user_id", "user_id", "remind_at"),
        Index("ix_reminders_due", "remind_at", postgresql_where=text("fired_at IS NULL")),
    )


class ClockLease(Base):
    """When a periodic job last ran, whichever replica ran it: one run per interval."""

    __tablename__ = "clock_leases"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
