"""HTTP endpoints of the notifier: thin, the rules live in service.py."""

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.schemas import (
    NotificationList,
    NotificationOut,
    NotificationQuery,
    Preferences,
    PreferencesUpdate,
    ReadAllQuery,
    ReadAllResult,
    ReminderCreate,
    ReminderOut,
)
from notifier.service import NotificationService, PreferenceService, ReminderService
from taskhub_common.db import get_session
from taskhub_common.routing import service_router
from taskhub_common.users import KnownCaller

router = service_router(prefix="/api/notifications", tags=["notifications"])
reminders_router = service_router(prefix="/api/tasks/{task_id}/reminders", tags=["reminders"])

Session = Annotated[AsyncSession, Depends(get_session)]


def notification_service(principal: KnownCaller, session: Session) -> NotificationService:
    return NotificationService(session, principal.user_id)


def preference_service(principal: KnownCaller, session: Session) -> PreferenceService:
    return PreferenceService(session, principal.user_id)


def reminder_service(request: Request, principal: KnownCaller, session: Session) -> ReminderService:
    return ReminderService(session, request.app.state.tasks_client, principal.user_id)


Notifications = Annotated[NotificationService, Depends(notification_service)]
PreferencesOfCaller = Annotated[PreferenceService, Depends(preference_service)]
Reminders = Annotated[ReminderService, Depends(reminder_service)]


@router.get("")
@router.get("/", include_in_schema=False)
async def list_notifications(
    query: Annotated[NotificationQuery, Query()], service: Notifications
) -> NotificationList:
    """The caller's notifications, newest first, with their unread count; `next_cursor` pages
    to older ones."""
    return await service.list(query)


@router.put("/{notification_id}/read")
# The seed's SPA marks a notification read with a POST: kept, documented as deprecated, so
# that `Allow` and the document name the same methods.
@router.post("/{notification_id}/read", deprecated=True)
async def mark_read(notification_id: uuid.UUID, service: Notifications) -> NotificationOut:
    return await service.mark_read(notification_id)


@router.post("/read-all")
async def mark_all_read(
    query: Annotated[ReadAllQuery, Query()], service: Notifications
) -> ReadAllResult:
    """Marks the caller's notices read: those that exist now, or up to `up_to`. A notice
    created after the call stays unread."""
    return await service.mark_all_read(query.up_to)


@router.get("/preferences")
async def get_preferences(service: PreferencesOfCaller) -> Preferences:
    return await service.get()


@router.put("/preferences")
async def update_preferences(body: PreferencesUpdate, service: PreferencesOfCaller) -> Preferences:
    return await service.update(body)


@router.get("/reminders")
async def my_reminders(service: Reminders) -> list[ReminderOut]:
    """The caller's reminders on every task, the next one first."""
    return await service.mine()


@reminders_router.post("", status_code=201)
async def create_reminder(
    task_id: uuid.UUID, body: ReminderCreate, service: Reminders
) -> ReminderOut:
    return await service.create(task_id, body)


@reminders_router.get("")
async def task_reminders(task_id: uuid.UUID, service: Reminders) -> list[ReminderOut]:
    """The caller's own reminders on this task."""
    return await service.of_task(task_id)


@reminders_router.delete("/{reminder_id}", status_code=204)
async def delete_reminder(
    task_id: uuid.UUID, reminder_id: uuid.UUID, service: Reminders
) -> Response:
    await service.delete(task_id, reminder_id)
    return Response(status_code=204)
