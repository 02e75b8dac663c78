"""The notifier service: in-app notifications and email from events, reminders, and the clock
that calls tasks' overdue sweep."""

import asyncio
from pathlib import Path

from fastapi import FastAPI

from notifier.consumers import (
    on_comment_created,
    on_task_assigned,
    on_task_changed,
    on_task_deleted,
    on_task_overdue,
    on_user_event,
)
from notifier.delivery import Dispatcher
from notifier.router import reminders_router, router
from notifier.settings import NotifierSettings
from notifier.workers import mail_worker, overdue_clock, reminder_clock
from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.contracts import (
    COMMENT_CREATED,
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_OVERDUE,
    TASK_UPDATED,
    USER_REGISTERED,
    USER_UPDATED,
)


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router, reminders_router],
            description="In-app notifications, email, reminders and the overdue clock.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers={
                USER_REGISTERED: on_user_event,
                USER_UPDATED: on_user_event,
                TASK_CREATED: on_task_changed,
                TASK_UPDATED: on_task_changed,
                TASK_COMPLETED: on_task_changed,
                TASK_ASSIGNED: on_task_assigned,
                TASK_DELETED: on_task_deleted,
                TASK_OVERDUE: on_task_overdue,
                COMMENT_CREATED: on_comment_created,
            },
            background=[mail_worker, reminder_clock, overdue_clock],
            asks_tasks=True,
        )
    )
    # Set here, not in a startup hook: an event may be handled as soon as the app subscribes.
    app.state.mail_queued = asyncio.Event()
    app.state.dispatcher = Dispatcher(settings.SERVICE_NAME, app.state.mail_queued)
    return app
