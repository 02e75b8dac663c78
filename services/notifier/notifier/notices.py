"""What each kind of notice says (title and message; the email's subject and text)."""

import uuid
from datetime import datetime

from notifier.delivery import Notice
from notifier.models import NotificationType


def _quoted(title: str | None) -> str:
    return f'"{title}"' if title else "a task"


def task_assigned(cause_id: uuid.UUID, task_id: uuid.UUID, title: str) -> Notice:
    return Notice(
        type=NotificationType.TASK_ASSIGNED,
        cause_id=cause_id,
        task_id=task_id,
        title="New task assigned",
        message=f"You have been assigned to {_quoted(title)}.",
    )


def comment_added(
    cause_id: uuid.UUID, task_id: uuid.UUID, task_title: str | None, author: str | None
) -> Notice:
    return Notice(
        type=NotificationType.COMMENT_ADDED,
        cause_id=cause_id,
        task_id=task_id,
        title="New comment",
        message=f"{author or 'Someone'} commented on {_quoted(task_title)}.",
    )


def task_overdue(cause_id: uuid.UUID, task_id: uuid.UUID, title: str, due_date: datetime) -> Notice:
    return Notice(
        type=NotificationType.TASK_OVERDUE,
        cause_id=cause_id,
        task_id=task_id,
        title="Task overdue",
        message=f"{_quoted(title)} was due {due_date:%Y-%m-%d %H:%M} UTC and is not completed.",
        # One email per due date that passed, however many events say so.
        email_key=f"task_overdue:{task_id}:{due_date.isoformat()}",
    )


def task_reminder(
    reminder_id: uuid.UUID, task_id: uuid.UUID, title: str | None, due_date: datetime | None
) -> Notice:
    due = f", due {due_date:%Y-%m-%d %H:%M} UTC" if due_date else ""
    return Notice(
        type=NotificationType.TASK_REMINDER,
        cause_id=reminder_id,
        task_id=task_id,
        title="Reminder",
        message=f"Reminder about {_quoted(title)}{due}.",
    )
