"""The analytics service: a read model of tasks fed by events; overview, performance, trends,
cycle time, burn-up and the export."""

from pathlib import Path

from fastapi import FastAPI

from analytics.backfill import backfill_at_start
from analytics.cache import open_cache
from analytics.consumers import BATCH_EVENT_HANDLERS, EVENT_HANDLERS
from analytics.router import router
from analytics.settings import AnalyticsSettings
from taskhub_common.app import ServiceSpec, create_service_app


def create_app(settings: AnalyticsSettings | None = None) -> FastAPI:
    settings = settings or AnalyticsSettings()

    async def close_cache(app: FastAPI) -> None:
        await app.state.cache.store.close()

    application = create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router],
            description="Task analytics of TaskHub, from a read model fed by task events.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers=EVENT_HANDLERS,
            batch_event_handlers=BATCH_EVENT_HANDLERS,
            on_shutdown=[close_cache],
            background=[backfill_at_start],
            asks_tasks=True,
        )
    )
    # Before the lifespan starts: the consumer may hand over an event as soon as it subscribes.
    application.state.cache = open_cache(settings)
    return application
