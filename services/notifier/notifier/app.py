"""The notifier service: in-app notifications and email from events, reminders, and the clock
that calls tasks' overdue sweep."""

import asyncio
from pathlib import Path

from fastapi import FastAPI

from notifier.consumers import BATCH_EVENT_HANDLERS, EVENT_HANDLERS
from notifier.delivery import Dispatcher
from notifier.router import reminders_router, router
from notifier.settings import NotifierSettings
from notifier.workers import mail_worker, overdue_clock, reminder_clock
from taskhub_common.app import ServiceSpec, create_service_app


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings()
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router, reminders_router],
            description="In-app notifications, email, reminders and the overdue clock.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers=EVENT_HANDLERS,
            batch_event_handlers=BATCH_EVENT_HANDLERS,
            background=[mail_worker, reminder_clock, overdue_clock],
            asks_tasks=True,
        )
    )
    # Set here, not in a startup hook: an event may be handled as soon as the app subscribes.
    app.state.mail_queued = asyncio.Event()
    app.state.dispatcher = Dispatcher(settings.SERVICE_NAME, app.state.mail_queued)
    return app
