"""The published event contract: every event type's name and the model of its `data`.

One model per type and version, whoever emits the event. Adding a field is fine; removing or
renaming one needs a new version. Consumers parse `data` with these models, so a producer that
drifts fails its own tests, not a consumer in production.
"""

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

USER_REGISTERED = "user.registered"
USER_UPDATED = "user.updated"

TASK_CREATED = "task.created"
TASK_UPDATED = "task.updated"
TASK_ASSIGNED = "task.assigned"
TASK_COMPLETED = "task.completed"
TASK_DELETED = "task.deleted"
TASK_OVERDUE = "task.overdue"

COMMENT_CREATED = "comment.created"
COMMENT_UPDATED = "comment.updated"
COMMENT_DELETED = "comment.deleted"

FILE_UPLOADED = "file.uploaded"
FILE_DELETED = "file.deleted"

NOTIFICATION_CREATED = "notification.created"

TASK_EVENTS = (
    TASK_CREATED,
    TASK_UPDATED,
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_DELETED,
    TASK_OVERDUE,
)


class UserData(BaseModel):
    """`data` of user.registered and user.updated (v1): the user's public fields and email."""

    id: uuid.UUID
    email: str
    username: str
    full_name: str
    avatar_url: str | None
    is_active: bool
    created_at: datetime
    # user.updated only: {field: new value}.
    changes: dict[str, Any] | None = None


class UserSummary(BaseModel):
    """A task's creator or assignee, a comment's author, as events and the API show them (no
    email: that is for the user themself)."""

    id: uuid.UUID
    email: None = None
    username: str
    full_name: str
    avatar_url: str | None
    is_active: bool
    created_at: datetime


class TagData(BaseModel):
    id: uuid.UUID
    name: str
    color: str
    created_at: datetime


class TaskData(BaseModel):
    """`data` of every task.* event (v1): the task as the API shows it, after the change.

    task.updated, task.assigned and task.completed add `changes` ({field: new value});
    task.deleted has `changes` {"is_deleted": true}; task.created and task.overdue have none.
    """

    id: uuid.UUID
    title: str
    description: str | None
    status: str
    priority: str
    start_date: datetime | None
    due_date: datetime | None
    completed_at: datetime | None
    notify_overdue: bool
    is_deleted: bool
    created_by: uuid.UUID
    assigned_to: uuid.UUID | None
    creator: UserSummary | None = None
    assignee: UserSummary | None = None
    tags: list[TagData]
    created_at: datetime
    updated_at: datetime
    changes: dict[str, Any] | None = None


class CommentData(BaseModel):
    """`data` of comment.* events (v1): the comment, and the task's people so a consumer knows
    whom to tell without asking tasks. comment.updated adds `changes`."""

    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    author: UserSummary | None = None
    content: str
    content_html: str
    is_deleted: bool
    created_at: datetime
    updated_at: datetime
    task_creator_id: uuid.UUID
    task_assignee_id: uuid.UUID | None
    changes: dict[str, Any] | None = None


class FileData(BaseModel):
    """`data` of file.uploaded and file.deleted (v1): the attachment and the task's people."""

    id: uuid.UUID
    task_id: uuid.UUID
    filename: str
    original_filename: str
    content_type: str
    size: int
    uploaded_by: uuid.UUID
    created_at: datetime
    task_creator_id: uuid.UUID
    task_assignee_id: uuid.UUID | None


class NotificationData(BaseModel):
    """`data` of notification.created (v1): the notification, addressed to `user_id`."""

    id: uuid.UUID
    user_id: uuid.UUID
    task_id: uuid.UUID | None
    type: str
    title: str
    message: str
    is_read: bool
    created_at: datetime
