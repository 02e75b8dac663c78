"""The backfill: the read model built from the tasks service's export, for a service started
after tasks already exist (at start, until one has finished) or on `make analytics-rebuild`.

Live events keep arriving meanwhile; both go through the same versioned upsert, so whichever
comes second for a task changes nothing unless it is newer: no loss, no double counting.
"""

import asyncio
import logging
import uuid

from fastapi import FastAPI

from analytics.repository import AnalyticsRepository
from taskhub_common.cache import GenerationalCache
from taskhub_common.db import Database
from taskhub_common.tasks_client import TasksClient

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


async def rebuild(
    database: Database, tasks: TasksClient, cache: GenerationalCache, page_size: int
) -> int:
    """Read every page of the export (keyset: `after` the last id) into the model; returns how
    many tasks were read."""
    after: uuid.UUID | None = None
    read = 0
    while True:
        page = await tasks.export_page(after, page_size)
        if not page:
            break
        async with database.sessionmaker.begin() as session:
            await AnalyticsRepository(session).apply(page)
        await cache.invalidate()
        read += len(page)
        after = page[-1].id
    async with database.sessionmaker.begin() as session:
        await AnalyticsRepository(session).record_backfill(read)
    logger.info("backfill read %d tasks from the tasks service", read)
    return read


async def backfill_at_start(app: FastAPI) -> None:
    """Until one backfill has finished, try one (tasks may not be up yet: try again)."""
    settings = app.state.settings
    database: Database = app.state.database
    while True:
        try:
            async with database.sessionmaker() as session:
                if await AnalyticsRepository(session).backfill_done():
                    return
            await rebuild(
                database, app.state.tasks_client, app.state.cache, settings.BACKFILL_PAGE_SIZE
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("backfill failed; trying again in %s s", RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
