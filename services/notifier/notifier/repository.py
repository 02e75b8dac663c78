"""Every query of the notifier."""

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    DateTime,
    Select,
    Uuid,
    bindparam,
    delete,
    func,
    not_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models import (
    ClockLease,
    MailMessage,
    Notification,
    QuietHours,
    Reminder,
    TaskState,
    TypePreference,
    UserEmail,
)
from taskhub_common.db import array_rows
from taskhub_common.errors import invalid_field

NEWEST_FIRST = (Notification.created_at.desc(), Notification.id.desc())

_moved = array_rows("moved", {"task_id": Uuid, "due_date": DateTime(timezone=True)})
_reminders = Reminder.__table__
_FOLLOW_DUE_DATES = (
    update(_reminders)
    .where(
        _reminders.c.task_id == _moved.c.task_id,
        _reminders.c.fired_at.is_(None),
        _reminders.c.before_due_minutes.is_not(None),
    )
    .values(
        remind_at=_moved.c.due_date
        - func.make_interval(0, 0, 0, 0, 0, _reminders.c.before_due_minutes)
    )
)


def encode_cursor(created_at: datetime, notification_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(notification_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    invalid = invalid_field("cursor", "Invalid cursor", location="query")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, notification_id = json.loads(base64.urlsafe_b64decode(padded))
        # A forged cursor may hold anything: uuid.UUID(5) is an AttributeError, not a 422.
        if not (isinstance(created_at, str) and isinstance(notification_id, str)):
            raise invalid
        instant = datetime.fromisoformat(created_at)
        if instant.tzinfo is None:  # the cursor this service writes always has its offset
            raise invalid
        return instant, uuid.UUID(notification_id)
    except (ValueError, TypeError) as exc:
        raise invalid from exc


def unread_count_query(user_id: uuid.UUID) -> Select[tuple[int]]:
    """Counted in the partial index of unread notices (ix_notifications_user_unread): written
    `NOT is_read`, as the index's predicate, so the planner can use it."""
    return select(func.count()).where(Notification.user_id == user_id, not_(Notification.is_read))


notifications = Notification.__table__
# Built once: the statement every notice runs (parameters apart, so one cached statement
# whatever the number of recipients).
ADD_NOTIFICATIONS = (
    insert(notifications)
    .on_conflict_do_nothing(constraint="uq_notifications_cause_user")
    .returning(*notifications.c)
)


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert notices; one that exists for its (cause, user) is skipped, and only the new
        ones are returned."""
        if not rows:
            return []
        result = await self.session.execute(ADD_NOTIFICATIONS, rows)
        return [dict(row) for row in result.mappings()]

    async def page(
        self, user_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None, unread: bool
    ) -> list[Notification]:
        """Newest first; `after` is the last notice of the previous page."""
        statement = select(Notification).where(Notification.user_id == user_id)
        if unread:
            statement = statement.where(not_(Notification.is_read))
        if after is not None:
            statement = statement.where(
                tuple_(Notification.created_at, Notification.id) < tuple_(*after)
            )
        return list(await self.session.scalars(statement.order_by(*NEWEST_FIRST).limit(limit)))

    async def unread_count(self, user_id: uuid.UUID) -> int:
        return await self.session.scalar(unread_count_query(user_id)) or 0

    async def get_own(self, user_id: uuid.UUID, notification_id: uuid.UUID) -> Notification | None:
        return await self.session.scalar(
            select(Notification).where(
                Notification.id == notification_id, Notification.user_id == user_id
            )
        )

    async def mark_read(
        self, user_id: uuid.UUID, notification_id: uuid.UUID
    ) -> Notification | None:
        return await self.session.scalar(
            update(Notification)
            .where(Notification.id == notification_id, Notification.user_id == user_id)
            .values(is_read=True)
            .returning(Notification)
            .execution_options(synchronize_session=False)
        )

    async def mark_all_read(
        self, user_id: uuid.UUID, up_to: tuple[datetime, uuid.UUID] | None
    ) -> int:
        """Marks the unread notices this statement sees (those committed before it started),
        or only those up to a given one. A notice committed later stays unread."""
        statement = update(Notification).where(
            Notification.user_id == user_id, not_(Notification.is_read)
        )
        if up_to is not None:
            statement = statement.where(
                tuple_(Notification.created_at, Notification.id) <= tuple_(*up_to)
            )
        result = await self.session.execute(
            statement.values(is_read=True).execution_options(synchronize_session=False)
        )
        return result.rowcount


@dataclass(frozen=True)
class DeliverySettings:
    """What one recipient wants for one notification type."""

    in_app: bool = True
    email: bool = True
    timezone: str = "UTC"
    quiet_start: time | None = None
    quiet_end: time | None = None


DELIVERY_SETTINGS = text(
    """
    SELECT recipient.id, preference.in_app, preference.email,
           quiet.timezone, quiet.start, quiet."end"
    FROM unnest(CAST(:ids AS uuid[])) AS recipient(id)
    LEFT JOIN type_preferences AS preference
           ON preference.user_id = recipient.id AND preference.type = :type
    LEFT JOIN quiet_hours AS quiet ON quiet.user_id = recipient.id
    """
)


class PreferenceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def types(self, user_id: uuid.UUID) -> list[TypePreference]:
        return list(
            await self.session.scalars(
                select(TypePreference).where(TypePreference.user_id == user_id)
            )
        )

    async def quiet_hours(self, user_id: uuid.UUID) -> QuietHours | None:
        return await self.session.get(QuietHours, user_id, populate_existing=True)

    async def set_type(self, user_id: uuid.UUID, type_: str, in_app: bool, email: bool) -> None:
        statement = insert(TypePreference).values(
            user_id=user_id, type=type_, in_app=in_app, email=email
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[TypePreference.user_id, TypePreference.type],
                set_={"in_app": statement.excluded.in_app, "email": statement.excluded.email},
            )
        )

    async def set_quiet_hours(
        self, user_id: uuid.UUID, timezone: str, start: time | None, end: time | None
    ) -> None:
        statement = insert(QuietHours).values(
            user_id=user_id, timezone=timezone, start=start, end=end
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[QuietHours.user_id],
                set_={key: statement.excluded[key] for key in ("timezone", "start", "end")},
            )
        )

    async def delivery_settings(
        self, user_ids: Sequence[uuid.UUID], type_: str
    ) -> dict[uuid.UUID, DeliverySettings]:
        """Each recipient's channels for this type and quiet hours, in one statement."""
        rows = await self.session.execute(DELIVERY_SETTINGS, {"ids": list(user_ids), "type": type_})
        return {
            row.id: DeliverySettings(
                in_app=row.in_app is not False,
                email=row.email is not False,
                timezone=row.timezone or "UTC",
                quiet_start=row.start,
                quiet_end=row.end,
            )
            for row in rows
        }


@dataclass(frozen=True)
class OutgoingMail:
    """A claimed message of the mail outbox, with its recipient's address (None: not known)."""

    id: uuid.UUID
    user_id: uuid.UUID
    task_id: uuid.UUID | None
    type: str
    subject: str
    body: str
    attempts: int
    address: str | None
    traceparent: str | None


mail_outbox = MailMessage.__table__
# Any conflict skips the row: its (cause, user), or its dedupe key, is queued already.
QUEUE_MAIL = insert(mail_outbox).on_conflict_do_nothing().returning(mail_outbox.c.id)


class MailRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, rows: list[dict[str, Any]]) -> int:
        """Queue messages; one that exists for its cause and user, or for its dedupe key, is
        skipped. Returns how many were queued."""
        if not rows:
            return 0
        return len((await self.session.scalars(QUEUE_MAIL, rows)).all())

    async def claim(self, limit: int) -> list[OutgoingMail]:
        """Messages due now, locked for this transaction; other workers skip them."""
        claimed = (
            select(MailMessage)
            .where(
                MailMessage.sent_at.is_(None),
                MailMessage.failed_at.is_(None),
                MailMessage.send_after <= func.now(),
            )
            .order_by(MailMessage.send_after)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("claimed")
        )
        rows = await self.session.execute(
            select(claimed, UserEmail.email).outerjoin(
                UserEmail, UserEmail.user_id == claimed.c.user_id
            )
        )
        return [
            OutgoingMail(
                id=row.id,
                user_id=row.user_id,
                task_id=row.task_id,
                type=row.type,
                subject=row.subject,
                body=row.body,
                attempts=row.attempts,
                address=row.email,
                traceparent=row.traceparent,
            )
            for row in rows
        ]

    async def mark_sent(self, ids: list[uuid.UUID]) -> None:
        if ids:
            await self.session.execute(
                update(MailMessage)
                .where(MailMessage.id.in_(ids))
                .values(sent_at=func.now(), attempts=MailMessage.attempts + 1, last_error=None)
            )

    async def mark_attempt_failed(
        self, mail_id: uuid.UUID, error: str, retry_in: timedelta | None
    ) -> None:
        """Count a failed attempt: retry after `retry_in`, or give up (None)."""
        values: dict[str, Any] = {"attempts": MailMessage.attempts + 1, "last_error": error[:1000]}
        if retry_in is None:
            values["failed_at"] = func.now()
        else:
            values["send_after"] = func.now() + retry_in
        await self.session.execute(
            update(MailMessage).where(MailMessage.id == mail_id).values(**values)
        )


@dataclass(frozen=True)
class TaskSnapshot:
    """A row of the read model `task_states`."""

    task_id: uuid.UUID
    title: str
    status: str
    due_date: datetime | None
    notify_overdue: bool
    is_deleted: bool
    created_by: uuid.UUID
    assigned_to: uuid.UUID | None
    updated_at: datetime


task_states = TaskState.__table__
_TASK_STATE_COLUMNS = [column.name for column in task_states.c]


def _apply_task_state() -> Any:
    """Built once, with bound parameters: every event runs this statement, and a Core statement
    made per call costs more to build and key than to execute."""
    statement = insert(task_states).values({name: bindparam(name) for name in _TASK_STATE_COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=[task_states.c.task_id],
        set_={name: statement.excluded[name] for name in _TASK_STATE_COLUMNS if name != "task_id"},
        where=task_states.c.updated_at <= statement.excluded.updated_at,
    ).returning(*task_states.c)


APPLY_TASK_STATE = _apply_task_state()


class TaskStateRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply(self, values: dict[str, Any]) -> TaskSnapshot:
        """Upsert the task's state unless what is held is newer; returns what is held now (one
        statement, unless the event was older than the state)."""
        applied = (await self.session.execute(APPLY_TASK_STATE, values)).mappings().first()
        if applied is not None:
            return TaskSnapshot(**applied)
        held = await self.get(values["task_id"])
        assert held is not None
        return held

    async def apply_many(self, rows: list[dict[str, Any]]) -> dict[uuid.UUID, TaskSnapshot]:
        """`apply` for tasks each named once, in one upsert (and one read of those whose held
        state was newer): what is held now, by task id."""
        if not rows:
            return {}
        applied = {
            row["task_id"]: TaskSnapshot(**row)
            for row in (await self.session.execute(APPLY_TASK_STATE, rows)).mappings()
        }
        older = [row["task_id"] for row in rows if row["task_id"] not in applied]
        if older:
            held = await self.session.execute(
                select(task_states).where(task_states.c.task_id.in_(older))
            )
            applied |= {row["task_id"]: TaskSnapshot(**row) for row in held.mappings()}
        return applied

    async def get(self, task_id: uuid.UUID) -> TaskSnapshot | None:
        row = (
            (
                await self.session.execute(
                    select(task_states).where(task_states.c.task_id == task_id)
                )
            )
            .mappings()
            .first()
        )
        return TaskSnapshot(**row) if row is not None else None


class UserEmailRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert(self, user_id: uuid.UUID, email: str, as_of: datetime) -> None:
        statement = insert(UserEmail).values(user_id=user_id, email=email, as_of=as_of)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[UserEmail.user_id],
                set_={"email": statement.excluded.email, "as_of": statement.excluded.as_of},
                where=UserEmail.as_of <= statement.excluded.as_of,
            )
        )


class ReminderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: dict[str, Any]) -> Reminder:
        return await self.session.scalar(insert(Reminder).values(**values).returning(Reminder))

    async def of_user(self, user_id: uuid.UUID, task_id: uuid.UUID | None = None) -> list[Reminder]:
        statement = select(Reminder).where(Reminder.user_id == user_id)
        if task_id is not None:
            statement = statement.where(Reminder.task_id == task_id)
        order = (Reminder.remind_at.asc().nulls_last(), Reminder.created_at, Reminder.id)
        return list(await self.session.scalars(statement.order_by(*order)))

    async def count_pending(self, user_id: uuid.UUID, task_id: uuid.UUID) -> int:
        statement = select(func.count()).where(
            Reminder.user_id == user_id, Reminder.task_id == task_id, Reminder.fired_at.is_(None)
        )
        return await self.session.scalar(statement) or 0

    async def delete_own(
        self, user_id: uuid.UUID, task_id: uuid.UUID, reminder_id: uuid.UUID
    ) -> bool:
        result = await self.session.execute(
            delete(Reminder).where(
                Reminder.id == reminder_id,
                Reminder.task_id == task_id,
                Reminder.user_id == user_id,
            )
        )
        return result.rowcount > 0

    async def drop_pending_of_tasks(self, task_ids: Sequence[uuid.UUID]) -> None:
        if task_ids:
            await self.session.execute(
                delete(Reminder).where(Reminder.task_id.in_(task_ids), Reminder.fired_at.is_(None))
            )

    async def follow_due_dates(self, due_dates: dict[uuid.UUID, datetime | None]) -> None:
        """Move the tasks' pending relative reminders with their (new) due dates: one statement
        for a batch of tasks (a bulk create's events are a thousand of them, with no reminder
        yet); no due date leaves them waiting (remind_at null)."""
        if due_dates:
            await self.session.execute(
                _FOLLOW_DUE_DATES,
                {"moved_task_id": list(due_dates), "moved_due_date": list(due_dates.values())},
            )

    async def claim_due(self, limit: int) -> list[Reminder]:
        return list(
            await self.session.scalars(
                select(Reminder)
                .where(Reminder.fired_at.is_(None), Reminder.remind_at <= func.now())
                .order_by(Reminder.remind_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )

    async def mark_fired(self, ids: list[uuid.UUID]) -> None:
        if ids:
            await self.session.execute(
                update(Reminder)
                .where(Reminder.id.in_(ids))
                .values(fired_at=func.now())
                .execution_options(synchronize_session=False)
            )

    async def delete_many(self, ids: list[uuid.UUID]) -> None:
        if ids:
            await self.session.execute(delete(Reminder).where(Reminder.id.in_(ids)))


class ClockRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def take_turn(self, name: str, interval: timedelta) -> bool:
        """True for exactly one caller per interval, across replicas: the row's conditional
        update (or first insert) succeeds for one of them, the others find it taken."""
        statement = insert(ClockLease).values(name=name, ran_at=func.now())
        result = await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[ClockLease.name],
                set_={"ran_at": func.now()},
                where=ClockLease.ran_at <= func.now() - interval,
            ).returning(ClockLease.name)
        )
        return result.first() is not None
