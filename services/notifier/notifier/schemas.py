import uuid
import zoneinfo
from datetime import datetime, time
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from notifier.models import NotificationType

# A year: a reminder further before the due date than this is a mistake.
MAX_BEFORE_DUE_MINUTES = 525_600


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    task_id: uuid.UUID | None
    type: NotificationType
    title: str
    message: str
    is_read: bool
    created_at: datetime


class NotificationList(BaseModel):
    notifications: list[NotificationOut]
    # The caller's unread notices, all pages.
    unread_count: int
    # Pass back as `cursor` for the next (older) page; null on the last page.
    next_cursor: str | None = None


class NotificationQuery(BaseModel):
    limit: int = Field(50, ge=1, le=100)
    cursor: str | None = None
    # Only unread notices.
    unread: bool = False


class ReadAllQuery(BaseModel):
    # The newest notice the client has seen: marks it and the older ones only. Without it,
    # every notice that exists when the request runs.
    up_to: uuid.UUID | None = None


class ReadAllResult(BaseModel):
    marked_read: int
    unread_count: int


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Paris)") from None
    return value


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_time_zone)]


class Channels(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    in_app: bool = True
    email: bool = True


class ChannelsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    in_app: bool | None = None
    email: bool | None = None


class QuietHoursOut(BaseModel):
    """Local times in the user's time zone; start after end spans midnight."""

    model_config = ConfigDict(extra="forbid")

    start: time
    end: time

    @model_validator(mode="after")
    def not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("quiet hours must not start and end at the same time")
        if self.start.tzinfo or self.end.tzinfo:
            raise ValueError("quiet hours are local times, without an offset")
        return self


class Preferences(BaseModel):
    types: dict[NotificationType, Channels]
    timezone: str
    quiet_hours: QuietHoursOut | None


class PreferencesUpdate(BaseModel):
    """Every field optional: what is absent is kept; `quiet_hours: null` clears them."""

    model_config = ConfigDict(extra="forbid")

    types: dict[NotificationType, ChannelsUpdate] | None = None
    timezone: TimeZone | None = None
    quiet_hours: QuietHoursOut | None = None


class ReminderCreate(BaseModel):
    """Exactly one of an absolute time and minutes before the task's due date."""

    model_config = ConfigDict(extra="forbid")

    remind_at: AwareDatetime | None = None
    before_due_minutes: int | None = Field(None, ge=0, le=MAX_BEFORE_DUE_MINUTES)

    @model_validator(mode="after")
    def exactly_one(self) -> Self:
        if (self.remind_at is None) == (self.before_due_minutes is None):
            raise ValueError("give either remind_at or before_due_minutes")
        return self


class ReminderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    # Null while the task's due date is not known for a relative reminder.
    remind_at: datetime | None
    before_due_minutes: int | None
    created_at: datetime
    # When it was delivered; null while pending.
    fired_at: datetime | None
