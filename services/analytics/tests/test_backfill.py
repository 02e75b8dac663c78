"""The backfill from the tasks export: a service started after tasks exist counts them all,
and a rebuild during live writes ends with the numbers the tasks service itself gives."""

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from analytics.app import create_app
from analytics.backfill import rebuild
from taskhub_common.internal_auth import service_headers
from taskhub_common.tasks_client import TasksClient
from taskhub_common.testing import asgi_client, create_task, eventually, scalar

from .conftest import analytics_settings

PRIORITIES = ("low", "medium", "high", "urgent")


async def source_of_truth(tasks_app: FastAPI, tasks: httpx.AsyncClient, owner: str) -> list[dict]:
    """The owner's tasks as the tasks service holds them now (its export, every page)."""
    headers = service_headers(tasks_app.state.settings.SECRET_KEY)
    found: list[dict] = []
    after = None
    while True:
        params = {"limit": 500, **({"after": after} if after else {})}
        page = (await tasks.get("/internal/tasks/export", headers=headers, params=params)).json()
        if not page:
            return [task for task in found if task["created_by"] == owner]
        found += page
        after = page[-1]["id"]


def brute_overview(tasks: list[dict]) -> dict:
    live = [task for task in tasks if not task["is_deleted"]]
    statuses = Counter(task["status"] for task in live)
    now = datetime.now(UTC).isoformat()
    overdue = sum(
        task["status"] == "overdue"
        or (task["status"] in ("todo", "in_progress") and (task["due_date"] or "9") < now)
        for task in live
    )
    by_status = {s: statuses[s] for s in ("todo", "in_progress", "completed", "overdue")}
    return {
        "total_tasks": len(live),
        "completed": statuses["completed"],
        "in_progress": statuses["in_progress"],
        "todo": statuses["todo"],
        "overdue": overdue,
        "by_priority": {p: sum(task["priority"] == p for task in live) for p in PRIORITIES},
        "by_status": by_status,
    }


async def overview(client: httpx.AsyncClient, headers: dict, owner: str) -> dict:
    response = await client.get(
        "/api/analytics/overview", headers=headers, params={"created_by": owner}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_service_started_late_counts_every_existing_task(
    tasks_app: FastAPI, tasks: httpx.AsyncClient, make_user
) -> None:
    owner, headers = await make_user()
    made = [await create_task(tasks, headers, priority=PRIORITIES[i % 4]) for i in range(25)]
    for task in made[:5]:
        body = {"status": "completed"}
        assert (await tasks.put(f"/api/tasks/{task['id']}", headers=headers, json=body)).is_success
    assert (await tasks.delete(f"/api/tasks/{made[-1]['id']}", headers=headers)).status_code == 204
    # Its own schema and queue: it was not there when those events went out.
    late = create_app(analytics_settings(SERVICE_NAME="analytics_late", BACKFILL_PAGE_SIZE=7))
    async with late.router.lifespan_context(late), asgi_client(late, "http://late") as client:
        expected = brute_overview(await source_of_truth(tasks_app, tasks, owner["id"]))
        assert expected["total_tasks"] == 24 and expected["completed"] == 5

        async def caught_up() -> bool:
            return await overview(client, headers, owner["id"]) == expected

        await eventually(caught_up, "the late service counts every task once", timeout=15)

        async def recorded() -> bool:
            return await scalar(late, "SELECT count(*) FROM backfills") == 1

        await eventually(recorded, "the finished backfill is recorded (none runs again)")
        assert await scalar(late, "SELECT sum(tasks) FROM backfills") >= 25


async def test_a_rebuild_during_live_writes_ends_exact(
    app: FastAPI, tasks_app: FastAPI, tasks: httpx.AsyncClient, client: httpx.AsyncClient, make_user
) -> None:
    owner, headers = await make_user()
    rng = random.Random(7)
    made = [await create_task(tasks, headers) for _ in range(30)]

    async def live_writes() -> None:
        for task in made:
            url = f"/api/tasks/{task['id']}"
            choice = rng.random()
            if choice < 0.3:
                await tasks.put(url, headers=headers, json={"status": "completed"})
            elif choice < 0.5:
                await tasks.put(url, headers=headers, json={"status": "in_progress"})
            elif choice < 0.6:
                await tasks.delete(url, headers=headers)
            else:
                due = (datetime.now(UTC) - timedelta(days=1)).isoformat()
                await tasks.put(url, headers=headers, json={"priority": "urgent", "due_date": due})
            await create_task(tasks, headers)

    settings = app.state.settings
    await asyncio.gather(
        live_writes(),
        rebuild(
            app.state.database,
            TasksClient(tasks, settings.SECRET_KEY),
            app.state.cache,
            page_size=5,
        ),
    )
    expected = brute_overview(await source_of_truth(tasks_app, tasks, owner["id"]))
    assert expected["total_tasks"] >= 55

    async def exact() -> bool:
        return await overview(client, headers, owner["id"]) == expected

    await eventually(exact, "the model equals the tasks service's own data", timeout=15)
