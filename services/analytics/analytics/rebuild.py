"""`make analytics-rebuild`: read the tasks service's export into the read model again, while
the running service keeps taking events (see analytics.backfill)."""

import asyncio

from analytics.backfill import rebuild
from analytics.cache import open_cache
from analytics.settings import AnalyticsSettings
from taskhub_common.db import Database
from taskhub_common.http import make_http_client
from taskhub_common.tasks_client import TasksClient


async def main() -> None:
    settings = AnalyticsSettings()
    database = Database(settings)
    cache = open_cache(settings)
    tasks = make_http_client(settings.TASKS_URL, timeout=60.0)
    try:
        read = await rebuild(
            database, TasksClient(tasks, settings.SECRET_KEY), cache, settings.BACKFILL_PAGE_SIZE
        )
        print(f"analytics: {read} tasks read from the tasks service")
    finally:
        await tasks.aclose()
        await cache.store.close()
        await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
