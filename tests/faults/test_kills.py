"""SIGKILL mid-burst: the consumer (comments) and the producer (tasks) die while 1,000 tasks are
being deleted and come back; nothing is lost and nothing dead-lettered."""

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from tests.e2e.accounts import register
from tests.e2e.stack import Stack
from tests.faults.checks import BURST, all_ready, nothing_lost, wait_for

# A safety net over the bounds each wait sets: the first test also waits up to 300 s for the
# stack to start (seven processes), and on a loaded machine a killed service takes a minute or
# more to import and start again.
pytestmark = pytest.mark.timeout(900)


# What a client sees while the tasks process is dead or starting: the gateway's 503/504.
UNAVAILABLE = {502, 503, 504}


async def test_sigkill_of_consumer_and_producer_mid_burst_loses_nothing(
    api: httpx.AsyncClient, database: asyncpg.Connection, stack: Stack
) -> None:
    owner = await register(api)
    headers = owner["headers"]
    created = await api.post(
        "/api/tasks/bulk",
        headers=headers,
        json={"tasks": [{"title": f"k{i}"} for i in range(BURST)]},
    )
    assert created.status_code == 201, created.text
    task_ids = [task["id"] for task in created.json()]
    process = {p.name: p for p in stack.processes}
    done = 0
    limit = asyncio.Semaphore(16)

    async def delete(task_id: str) -> None:
        """Retried until answered: a request cut by the kill may have committed, and its key
        makes the retry answer 204 again instead of 404."""
        nonlocal done
        keyed = {**headers, "Idempotency-Key": str(uuid.uuid4())}
        async with limit:
            while True:
                try:
                    response = await api.delete(f"/api/tasks/{task_id}", headers=keyed)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 204:
                    done += 1
                    return
                assert response is None or response.status_code in UNAVAILABLE, response.text
                await asyncio.sleep(0.2)

    async def chaos() -> None:
        await wait_for(lambda: reached(200), 120, "200 deletes")
        process["comments"].kill()
        await wait_for(lambda: reached(400), 120, "400 deletes")
        process["tasks"].kill()
        process["tasks"].start()
        await wait_for(lambda: reached(700), 180, "700 deletes")
        process["comments"].start()

    async def reached(count: int) -> bool:
        return done >= count

    await asyncio.gather(chaos(), *(delete(task_id) for task_id in task_ids))
    assert done == BURST
    await nothing_lost(database, task_ids)
    await wait_for(lambda: all_ready(api), 60, "every service ready again")
