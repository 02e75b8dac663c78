"""The one way a notice reaches its recipients: an in-app notification, a queued email, or both,
as each recipient's preferences say, written in the caller's transaction."""

import asyncio
import uuid
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models import NotificationType
from notifier.repository import (
    DeliverySettings,
    MailRepository,
    NotificationRepository,
    PreferenceRepository,
)
from taskhub_common.contracts import NOTIFICATION_CREATED, NotificationData
from taskhub_common.db import after_commit
from taskhub_common.events import EventEnvelope
from taskhub_common.logs import current_traceparent
from taskhub_common.outbox import add_events


@dataclass(frozen=True)
class Notice:
    """What to tell, and why: `cause_id` (an event's id, or a reminder's) makes a notice and
    its email once per recipient however often the cause is handled."""

    type: NotificationType
    cause_id: uuid.UUID
    task_id: uuid.UUID | None
    title: str
    message: str
    # Set when one email per key and recipient must go whatever the causes (an overdue task:
    # once per due date that passed).
    email_key: str | None = None


def quiet_until(now: datetime, settings: DeliverySettings) -> datetime | None:
    """The end of the recipient's quiet hours if `now` falls in them, else None."""
    start, end = settings.quiet_start, settings.quiet_end
    if start is None or end is None or start == end:
        return None
    zone = zoneinfo.ZoneInfo(settings.timezone)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    quiet = start <= clock < end if start < end else clock >= start or clock < end
    if not quiet:
        return None
    return _next_local(local, end, zone).astimezone(UTC)


def _next_local(local: datetime, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate


class Dispatcher:
    """One per app; takes the session per call, so events, reminders and tests share it."""

    def __init__(self, producer: str, mail_queued: asyncio.Event) -> None:
        self.producer = producer
        self.mail_queued = mail_queued

    async def deliver(
        self, session: AsyncSession, notice: Notice, recipients: Iterable[uuid.UUID]
    ) -> list[NotificationData]:
        """Returns the in-app notifications created now (none for a cause already handled)."""
        return await self.deliver_many(session, [(notice, recipients)])

    async def deliver_many(
        self,
        session: AsyncSession,
        deliveries: Sequence[tuple[Notice, Iterable[uuid.UUID]]],
    ) -> list[NotificationData]:
        """`deliver` for many notices at once: one read of the preferences per notice type,
        one insert per table."""
        wanted = [(notice, sorted(set(recipients))) for notice, recipients in deliveries]
        settings: dict[tuple[NotificationType, uuid.UUID], DeliverySettings] = {}
        preferences = PreferenceRepository(session)
        for type_ in {notice.type for notice, _ in wanted}:
            user_ids = sorted(
                {user for notice, users in wanted if notice.type == type_ for user in users}
            )
            if user_ids:
                for user_id, each in (await preferences.delivery_settings(user_ids, type_)).items():
                    settings[type_, user_id] = each
        rows = await NotificationRepository(session).add_many(
            [
                {
                    "id": uuid.uuid4(),
                    "user_id": user_id,
                    "task_id": notice.task_id,
                    "type": notice.type,
                    "title": notice.title,
                    "message": notice.message,
                    "cause_id": notice.cause_id,
                }
                for notice, user_ids in wanted
                for user_id in user_ids
                if settings[notice.type, user_id].in_app
            ]
        )
        created = [NotificationData.model_validate(row) for row in rows]
        if created:
            await add_events(session, [self._created_event(notice) for notice in created])
        now = datetime.now(UTC)
        traceparent = current_traceparent()
        queued = await MailRepository(session).add_many(
            [
                {
                    "id": uuid.uuid4(),
                    "cause_id": notice.cause_id,
                    "user_id": user_id,
                    "task_id": notice.task_id,
                    "type": notice.type,
                    "subject": notice.title,
                    "body": notice.message,
                    "dedupe_key": f"{notice.email_key}:{user_id}" if notice.email_key else None,
                    "send_after": quiet_until(now, settings[notice.type, user_id]) or now,
                    "traceparent": traceparent,
                }
                for notice, user_ids in wanted
                for user_id in user_ids
                if settings[notice.type, user_id].email
            ]
        )
        if queued:
            after_commit(session, self._wake_mail_worker)
        return created

    async def _wake_mail_worker(self) -> None:
        self.mail_queued.set()

    def _created_event(self, notification: NotificationData) -> EventEnvelope:
        return EventEnvelope(
            type=NOTIFICATION_CREATED,
            producer=self.producer,
            actor_id=None,
            aggregate_id=notification.id,
            data=notification.model_dump(),
        )
