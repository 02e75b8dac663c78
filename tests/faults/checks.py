"""What the fault tests wait for and check: consumers caught up, outboxes drained, readiness."""

import asyncio
import time

import asyncpg
import httpx

from taskhub_common.dlq import inspect_dead_letters
from taskhub_common.testing import RABBITMQ_URL

BURST = 1_000
# The services that keep a table of deleted tasks, filled from task.deleted.
TASK_DELETED_CONSUMERS = ("comments", "files", "notifier")
CONSUMERS = ("tasks", *TASK_DELETED_CONSUMERS)
OUTBOXES = ("identity", "tasks", "comments", "files", "notifier")


async def readiness(api: httpx.AsyncClient) -> dict[str, dict]:
    return (await api.get("/api/health")).json()["services"]


async def wait_for(check, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.5)


async def every_deletion_arrived(database: asyncpg.Connection, task_ids: list[str]) -> bool:
    for service in TASK_DELETED_CONSUMERS:
        count = await database.fetchval(
            f"SELECT count(*) FROM {service}.deleted_tasks WHERE task_id = ANY($1::uuid[])",  # noqa: S608
            task_ids,
        )
        if count != len(task_ids):
            return False
    return True


async def outboxes_drained(database: asyncpg.Connection) -> bool:
    for schema in OUTBOXES:
        unsent = await database.fetchval(
            f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"  # noqa: S608
        )
        if unsent:
            return False
    return True


async def nothing_lost(database: asyncpg.Connection, task_ids: list[str]) -> None:
    """Every task.deleted reached every consumer, every outbox is empty of unsent rows, and no
    consumer dead-lettered anything."""
    await wait_for(
        lambda: every_deletion_arrived(database, task_ids), 120, "every task.deleted arrived"
    )
    await wait_for(lambda: outboxes_drained(database), 60, "every outbox drained")
    for service in CONSUMERS:
        assert await inspect_dead_letters(RABBITMQ_URL, service) == [], service


async def all_ready(api: httpx.AsyncClient) -> bool:
    return all(check["status"] == "ok" for check in (await readiness(api)).values())
