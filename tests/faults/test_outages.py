"""Outages under load: the broker cut during a burst of 1,000 creates and 1,000 deletes loses
nothing and dead-letters nothing; a database cut answers 503, never 500; readiness tells."""

import asyncio

import asyncpg
import httpx
import pytest

from taskhub_common.testing import TcpProxy
from tests.e2e.accounts import register
from tests.faults.checks import BURST, CONSUMERS, all_ready, nothing_lost, readiness, wait_for

# A safety net over the bounds each wait sets: the first test also waits up to 300 s for the
# stack to start (seven processes), and on a loaded machine a killed service takes a minute or
# more to import and start again.
pytestmark = pytest.mark.timeout(900)


async def test_a_broker_cut_mid_burst_loses_nothing(
    api: httpx.AsyncClient, database: asyncpg.Connection, broker_proxy: TcpProxy
) -> None:
    owner = await register(api)
    headers = owner["headers"]
    broker_proxy.stop()

    async def broker_seen_down() -> bool:
        services = await readiness(api)
        return all(services[name].get("checks", {}).get("broker") == "down" for name in CONSUMERS)

    await wait_for(broker_seen_down, 30, "readiness says broker down")
    created = await api.post(
        "/api/tasks/bulk",
        headers=headers,
        json={"tasks": [{"title": f"t{i}"} for i in range(BURST)]},
    )
    assert created.status_code == 201, created.text
    task_ids = [task["id"] for task in created.json()]
    limit = asyncio.Semaphore(16)

    async def delete(task_id: str) -> int:
        async with limit:
            return (await api.delete(f"/api/tasks/{task_id}", headers=headers)).status_code

    statuses = await asyncio.gather(*(delete(task_id) for task_id in task_ids))
    assert statuses == [204] * BURST
    unsent = await database.fetchval("SELECT count(*) FROM tasks.outbox WHERE sent_at IS NULL")
    assert unsent >= 2 * BURST, "with the broker away, the events wait in the outbox"
    assert (await readiness(api))["tasks"]["checks"]["broker"] == "down"

    broker_proxy.start()

    await nothing_lost(database, task_ids)
    await wait_for(lambda: all_ready(api), 60, "every service ready again")


async def test_a_database_cut_is_503_not_500_and_readiness_tells(
    api: httpx.AsyncClient, database_proxy: TcpProxy
) -> None:
    owner = await register(api)
    headers = owner["headers"]
    task = (await api.post("/api/tasks", headers=headers, json={"title": "before"})).json()
    database_proxy.stop()
    try:
        for method, path, body in (
            ("POST", "/api/tasks", {"title": "during"}),
            ("PUT", f"/api/tasks/{task['id']}", {"title": "during"}),
            ("POST", f"/api/tasks/{task['id']}/comments", {"content": "during"}),
            ("GET", "/api/notifications", None),
        ):
            response = await api.request(method, path, headers=headers, json=body)
            assert response.status_code == 503, (method, path, response.text)
            assert int(response.headers["retry-after"]) > 0
        services = await readiness(api)
        for name in ("tasks", "comments", "files", "notifier", "identity"):
            assert services[name]["checks"]["database"] == "down", name
    finally:
        database_proxy.start()

    async def back() -> bool:
        response = await api.post("/api/tasks", headers=headers, json={"title": "after"})
        return response.status_code == 201

    await wait_for(back, 60, "writes accepted again")
    fetched = await api.get(f"/api/tasks/{task['id']}", headers=headers)
    assert fetched.json()["title"] == "before", "nothing half-written during the cut"
