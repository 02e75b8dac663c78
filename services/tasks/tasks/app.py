"""The tasks service: tasks, tags, bulk create, filtering and search, the overdue sweep."""

import gc
from pathlib import Path

from fastapi import FastAPI

from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.cache import GenerationalCache, make_store
from tasks.consumers import EVENT_HANDLERS
from tasks.router import internal_router, router
from tasks.service import TaskService
from tasks.settings import TasksSettings

# A bulk create allocates some 10^5 objects: with the default threshold (700 allocations) that
# is dozens of young collections per request (decision 0086). Start-up's objects are frozen out
# of every collection's reach already (taskhub_common.app, decision 0049).
GC_YOUNG_THRESHOLD = 50_000


async def collect_young_less_often(app: FastAPI) -> None:
    """A setting of the process: in the embedded mode, every service's."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: TasksSettings | None = None) -> FastAPI:
    settings = settings or TasksSettings()

    async def open_cache(app: FastAPI) -> None:
        # Namespaced by database too: stacks sharing one Redis never read each other's entries.
        app.state.cache = GenerationalCache(
            make_store(settings.redis_url),
            f"{settings.DB_NAME}:{settings.schema_name}",
            settings.CACHE_TTL_SECONDS,
        )

    async def sweep_at_start(app: FastAPI) -> None:
        async with app.state.database.sessionmaker.begin() as session:
            await TaskService(session, app.state.cache, settings.SERVICE_NAME, None).sweep_overdue()
        await app.state.cache.invalidate()

    async def close_cache(app: FastAPI) -> None:
        await app.state.cache.store.close()

    return create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router, internal_router],
            description="Tasks, tags, bulk create, filtering and search of TaskHub.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers=EVENT_HANDLERS,
            on_startup=[open_cache, sweep_at_start, collect_young_less_often],
            on_shutdown=[close_cache],
        )
    )
