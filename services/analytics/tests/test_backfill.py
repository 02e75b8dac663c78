"""The backfill from the tasks export: a service started after tasks exist counts them all,
and a rebuild during live writes ends with the numbers the tasks service itself gives."""

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from analytics.app import create_app
from analytics.backfill import rebuild
from taskhub_common.internal_auth import service_headers
from taskhub_common.tasks_client import TasksClient
from taskhub_common.testing import asgi_client, create_task, eventually, parse_time, scalar, word

from .conftest import analytics_settings
from .test_exactness import (
    expected_burnup,
    expected_overview,
    expected_performance,
    expected_trends,
    visible,
)

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


def states_of(exported: list[dict]) -> list[dict]:
    """The export's tasks as test_exactness's brute force reads them."""
    moments = ("due_date", "completed_at", "created_at", "updated_at")
    return [
        {
            **task,
            **{name: parse_time(task[name]) if task[name] else None for name in moments},
            "created_by": uuid.UUID(task["created_by"]),
            "assigned_to": uuid.UUID(task["assigned_to"]) if task["assigned_to"] else None,
            "tag_names": [tag["name"] for tag in task["tags"]],
            # Not in the export; only the medians read it, and they are left out (below).
            "started_at": None,
        }
        for task in exported
    ]


def without_medians(rows: list[dict]) -> list[dict]:
    """Performance rows without the median cycle time: a task's start is the first version
    the model saw in progress, which depends on which events arrived before the rebuild
    overtook them, not on the final data."""
    return [{k: v for k, v in row.items() if k != "median_cycle_time_hours"} for row in rows]


async def test_a_rebuild_during_live_writes_ends_exact(
    app: FastAPI,
    tasks_app: FastAPI,
    tasks: httpx.AsyncClient,
    identity: httpx.AsyncClient,
    client: httpx.AsyncClient,
    make_user,
) -> None:
    owner, headers = await make_user()
    (ann, ann_headers), (ben, _) = await make_user(), await make_user()
    people = [ann["id"], ben["id"], None]
    tag, other_tag = word(), word()
    rng = random.Random(7)

    def new_task() -> dict:
        tags = rng.choice([[tag], [tag, other_tag], [other_tag]])
        return {"assigned_to": rng.choice(people), "tags": tags, "priority": rng.choice(PRIORITIES)}

    made = [await create_task(tasks, headers, **new_task()) for _ in range(30)]
    spans: dict[str, tuple[float, float]] = {}

    async def timed(name: str, work) -> None:
        began = asyncio.get_running_loop().time()
        await work
        spans[name] = (began, asyncio.get_running_loop().time())

    async def live_writes() -> None:
        """Changes of every kind, and a user event between them (the consumer's batches then
        hold several runs of task events: several upserts in one transaction)."""
        for index, task in enumerate(made):
            url = f"/api/tasks/{task['id']}"
            choice = rng.random()
            if choice < 0.3:
                body = {"status": "completed"}
            elif choice < 0.5:
                body = {"status": "in_progress", "assigned_to": rng.choice(people[:2])}
            elif choice < 0.6:
                assert (await tasks.delete(url, headers=headers)).status_code == 204
                body = None
            else:
                due = (datetime.now(UTC) - timedelta(days=1)).isoformat()
                body = {"priority": "urgent", "due_date": due}
            if body is not None:
                response = await tasks.put(url, headers=headers, json=body)
                assert response.status_code == 200, response.text
            await create_task(tasks, headers, **new_task())
            if index % 5 == 0:
                renamed = {"full_name": f"Ann {index}"}
                response = await identity.put("/api/auth/me", headers=ann_headers, json=renamed)
                assert response.status_code == 200, response.text

    settings = app.state.settings
    tasks_client = TasksClient(tasks, settings.SECRET_KEY)
    await asyncio.gather(
        timed("writes", live_writes()),
        timed("rebuild", rebuild(app.state.database, tasks_client, app.state.cache, page_size=3)),
    )
    (writes_began, writes_ended), (rebuild_began, rebuild_ended) = spans["writes"], spans["rebuild"]
    assert rebuild_began < writes_ended and writes_began < rebuild_ended, "they overlapped"

    states = states_of(await source_of_truth(tasks_app, tasks, owner["id"]))
    names = {
        uuid.UUID(ann["id"]): (ann["username"], "Ann 25"),
        uuid.UUID(ben["id"]): (ben["username"], ben["full_name"]),
    }
    owner_id = uuid.UUID(owner["id"])
    filter_sets = [
        {"created_by": owner_id},
        {"created_by": owner_id, "tag": tag},
        {"created_by": owner_id, "assigned_to": uuid.UUID(ann["id"])},
    ]
    assert len(visible(states, created_by=owner_id)) >= 55

    async def exact() -> bool:
        for filters in filter_sets:
            expected_tasks = visible(states, **filters)
            params = {key: str(value) for key, value in filters.items()}
            now = datetime.now(UTC)
            answers = {
                path: (
                    await client.get(f"/api/analytics/{path}", headers=headers, params=params)
                ).json()
                for path in ("overview", "performance", "trends", "burnup")
            }
            if (
                answers["overview"] != expected_overview(expected_tasks, now)
                or without_medians(answers["performance"])
                != without_medians(expected_performance(expected_tasks, now, names))
                or answers["trends"] != expected_trends(expected_tasks, 30)
                or answers["burnup"] != expected_burnup(expected_tasks, 30)
            ):
                return False
        return True

    await eventually(exact, "every answer equals the brute force over the tasks", timeout=15)
