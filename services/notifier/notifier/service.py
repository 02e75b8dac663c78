"""The notifier's use cases behind its API. No HTTP here; the route commits the transaction."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models import NotificationType
from notifier.repository import (
    NotificationRepository,
    PreferenceRepository,
    ReminderRepository,
    TaskStateRepository,
    decode_cursor,
    encode_cursor,
)
from notifier.schemas import (
    Channels,
    NotificationList,
    NotificationOut,
    NotificationQuery,
    Preferences,
    PreferencesUpdate,
    QuietHoursOut,
    ReadAllResult,
    ReminderCreate,
    ReminderOut,
)
from taskhub_common import deleted_tasks
from taskhub_common.errors import Conflict, NotFound, invalid_field
from taskhub_common.tasks_client import TasksClient

# Pending reminders one user may keep on one task.
MAX_PENDING_REMINDERS = 20


class NotificationService:
    """A user's own notifications; another user's are not found."""

    def __init__(self, session: AsyncSession, caller_id: uuid.UUID) -> None:
        self.caller_id = caller_id
        self.notifications = NotificationRepository(session)

    async def list(self, query: NotificationQuery) -> NotificationList:
        after = decode_cursor(query.cursor) if query.cursor else None
        # One more than asked says whether an older page exists.
        rows = await self.notifications.page(self.caller_id, query.limit + 1, after, query.unread)
        page = rows[: query.limit]
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > query.limit else None
        )
        return NotificationList(
            notifications=[NotificationOut.model_validate(row) for row in page],
            unread_count=await self.notifications.unread_count(self.caller_id),
            next_cursor=next_cursor,
        )

    async def mark_read(self, notification_id: uuid.UUID) -> NotificationOut:
        notification = await self.notifications.mark_read(self.caller_id, notification_id)
        if notification is None:
            raise NotFound("Notification not found")
        return NotificationOut.model_validate(notification)

    async def mark_all_read(self, up_to: uuid.UUID | None) -> ReadAllResult:
        bound = None
        if up_to is not None:
            newest_seen = await self.notifications.get_own(self.caller_id, up_to)
            if newest_seen is None:
                raise invalid_field("up_to", "Notification not found", location="query")
            bound = (newest_seen.created_at, newest_seen.id)
        marked = await self.notifications.mark_all_read(self.caller_id, bound)
        return ReadAllResult(
            marked_read=marked, unread_count=await self.notifications.unread_count(self.caller_id)
        )


class PreferenceService:
    def __init__(self, session: AsyncSession, caller_id: uuid.UUID) -> None:
        self.caller_id = caller_id
        self.preferences = PreferenceRepository(session)

    async def get(self) -> Preferences:
        chosen = {row.type: row for row in await self.preferences.types(self.caller_id)}
        quiet = await self.preferences.quiet_hours(self.caller_id)
        return Preferences(
            types={
                type_: Channels.model_validate(chosen[type_]) if type_ in chosen else Channels()
                for type_ in NotificationType
            },
            timezone=quiet.timezone if quiet else "UTC",
            quiet_hours=(
                QuietHoursOut(start=quiet.start, end=quiet.end)
                if quiet and quiet.start is not None and quiet.end is not None
                else None
            ),
        )

    async def update(self, body: PreferencesUpdate) -> Preferences:
        current = await self.get()
        for type_, change in (body.types or {}).items():
            channels = current.types[type_].model_copy(update=change.model_dump(exclude_none=True))
            await self.preferences.set_type(self.caller_id, type_, channels.in_app, channels.email)
        if body.timezone is not None or "quiet_hours" in body.model_fields_set:
            quiet = (
                body.quiet_hours if "quiet_hours" in body.model_fields_set else current.quiet_hours
            )
            await self.preferences.set_quiet_hours(
                self.caller_id,
                body.timezone or current.timezone,
                quiet.start if quiet else None,
                quiet.end if quiet else None,
            )
        return await self.get()


class ReminderService:
    """A user's reminders on tasks. Any active user may set one on any live task; a reminder
    is its creator's alone (another user's is not found)."""

    def __init__(self, session: AsyncSession, tasks: TasksClient, caller_id: uuid.UUID) -> None:
        self.session = session
        self.tasks = tasks
        self.caller_id = caller_id
        self.reminders = ReminderRepository(session)

    async def create(self, task_id: uuid.UUID, body: ReminderCreate) -> ReminderOut:
        await self._live_task(task_id)
        if await self.reminders.count_pending(self.caller_id, task_id) >= MAX_PENDING_REMINDERS:
            raise Conflict(f"At most {MAX_PENDING_REMINDERS} pending reminders per task")
        remind_at = body.remind_at
        if remind_at is not None:
            if remind_at <= datetime.now(UTC):
                raise invalid_field("remind_at", "remind_at must be in the future")
        else:
            assert body.before_due_minutes is not None
            state = await TaskStateRepository(self.session).get(task_id)
            # Not known yet (its event is on its way): the next task event sets the time.
            if state is not None:
                if state.due_date is None:
                    raise invalid_field("before_due_minutes", "The task has no due date")
                remind_at = state.due_date - timedelta(minutes=body.before_due_minutes)
        reminder = await self.reminders.add(
            {
                "id": uuid.uuid4(),
                "task_id": task_id,
                "user_id": self.caller_id,
                "remind_at": remind_at,
                "before_due_minutes": body.before_due_minutes,
            }
        )
        return ReminderOut.model_validate(reminder)

    async def of_task(self, task_id: uuid.UUID) -> list[ReminderOut]:
        await self._live_task(task_id)
        return [
            ReminderOut.model_validate(row)
            for row in await self.reminders.of_user(self.caller_id, task_id)
        ]

    async def mine(self) -> list[ReminderOut]:
        return [
            ReminderOut.model_validate(row) for row in await self.reminders.of_user(self.caller_id)
        ]

    async def delete(self, task_id: uuid.UUID, reminder_id: uuid.UUID) -> None:
        if not await self.reminders.delete_own(self.caller_id, task_id, reminder_id):
            raise NotFound("Reminder not found")

    async def _live_task(self, task_id: uuid.UUID) -> None:
        """task.deleted is remembered here; otherwise tasks says whether the task exists."""
        if await deleted_tasks.is_task_deleted(self.session, task_id):
            raise NotFound("Task not found")
        await self.tasks.get(task_id)
