"""The response cache: a write is seen by the very next read, in memory and in Redis; with Redis
down every endpoint still answers from the database."""

import asyncio
import json
import uuid

import httpx
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_common.internal_auth import service_headers
from taskhub_common.testing import REDIS_HOST, TcpProxy, create_task, word

from .conftest import at

# Its own Redis database, so no other suite's tasks service reads these entries.
REDIS_DB = 3


async def seed_cache(app: FastAPI, task_id: str, title: str, headers: dict, client) -> None:
    """Put a doctored copy of the task in the cache, to show a read is served from there."""
    body = (await client.get(f"/api/tasks/{task_id}", headers=headers)).json()
    key = f"task:{task_id}"
    _, generation = await app.state.cache.get(key)
    await app.state.cache.set(key, json.dumps({**body, "title": title}).encode(), generation)


async def check_writes_are_seen_at_once(
    reader_app: FastAPI,
    reader: httpx.AsyncClient,
    writer: httpx.AsyncClient,
    headers: dict,
) -> None:
    """Reads through `reader` (cached there), writes through `writer`, reads again."""
    term = word()
    task = await create_task(writer, headers, title=f"cached {term}")
    url = f"/api/tasks/{task['id']}"

    # Reads are served from the cache...
    await seed_cache(reader_app, task["id"], "from the cache", headers, reader)
    assert (await reader.get(url, headers=headers)).json()["title"] == "from the cache"
    # ...until a write: update then get.
    updated = await writer.put(url, headers=headers, json={"title": f"updated {term}"})
    assert updated.status_code == 200
    assert (await reader.get(url, headers=headers)).json()["title"] == f"updated {term}"
    assert (await reader.get(url, headers=headers)).json() == updated.json()

    # Create then list.
    listed = await reader.get("/api/tasks", headers=headers, params={"search": term})
    assert listed.json()["total"] == 1
    second = await create_task(writer, headers, title=f"second {term}")
    listed = await reader.get("/api/tasks", headers=headers, params={"search": term})
    assert listed.json()["total"] == 2
    assert listed.json()["tasks"][0]["id"] == second["id"]

    # Bulk create then list.
    bulk = await writer.post(
        "/api/tasks/bulk", headers=headers, json={"tasks": [{"title": f"bulk {term}"}]}
    )
    assert bulk.status_code == 201
    listed = await reader.get("/api/tasks", headers=headers, params={"search": term})
    assert listed.json()["total"] == 3

    # Delete then get and list.
    assert (await writer.delete(url, headers=headers)).status_code == 204
    assert (await reader.get(url, headers=headers)).status_code == 404
    listed = await reader.get("/api/tasks", headers=headers, params={"search": term})
    assert {t["id"] for t in listed.json()["tasks"]} == {second["id"], bulk.json()[0]["id"]}

    # The sweep, too, drops what was cached.
    late = await create_task(writer, headers, status="todo", due_date=at(-1))
    late_url = f"/api/tasks/{late['id']}"
    assert (await reader.get(late_url, headers=headers)).json()["status"] == "todo"
    secret = reader_app.state.settings.SECRET_KEY
    swept = await writer.post("/internal/tasks/overdue-sweep", headers=service_headers(secret))
    assert swept.status_code == 200
    assert (await reader.get(late_url, headers=headers)).json()["status"] == "overdue"


async def test_in_process_cache_sees_every_write(app: FastAPI, client, user) -> None:
    await check_writes_are_seen_at_once(app, client, client, user[1])


async def test_a_failed_write_keeps_the_cache(app: FastAPI, client, user) -> None:
    """A refused request commits nothing, so what is cached stays right."""
    headers = user[1]
    task = await create_task(client, headers)
    url = f"/api/tasks/{task['id']}"
    await seed_cache(app, task["id"], "still cached", headers, client)
    assert (await client.put(url, headers=headers, json={"status": "done"})).status_code == 422
    assert (await client.get(url, headers=headers)).json()["title"] == "still cached"


@pytest.fixture
async def redis_client() -> redis.Redis:
    client = redis.Redis(host=REDIS_HOST, db=REDIS_DB)
    yield client
    await client.aclose()


async def test_redis_cache_is_shared_by_replicas(
    start_tasks_app, redis_client: redis.Redis, user
) -> None:
    async with (
        start_tasks_app(REDIS_HOST=REDIS_HOST, REDIS_DB=REDIS_DB) as (first, first_client),
        start_tasks_app(REDIS_HOST=REDIS_HOST, REDIS_DB=REDIS_DB) as (_, second_client),
    ):
        headers = user[1]
        task = await create_task(first_client, headers)
        got = await first_client.get(f"/api/tasks/{task['id']}", headers=headers)
        assert got.status_code == 200
        namespace = first.state.cache.namespace
        generation = int(await redis_client.get(f"{namespace}:generation"))
        (entry,) = [key async for key in redis_client.scan_iter(f"{namespace}:*task:{task['id']}")]
        assert (await redis_client.get(entry)).endswith(got.content)
        ttl = await redis_client.ttl(entry)
        assert 0 < ttl <= first.state.settings.CACHE_TTL_SECONDS
        # A write through one replica is seen by the next read through the other, both ways.
        await check_writes_are_seen_at_once(first, first_client, second_client, headers)
        await check_writes_are_seen_at_once(first, first_client, first_client, headers)
        assert int(await redis_client.get(f"{namespace}:generation")) > generation


async def test_with_redis_down_every_endpoint_answers(start_tasks_app, make_user) -> None:
    creator, headers = await make_user()
    assignee, assignee_headers = await make_user()
    async with start_tasks_app(REDIS_HOST="127.0.0.1", REDIS_PORT=1) as (down, client):
        term = word()
        task = await create_task(
            client, headers, title=f"no cache {term}", due_date=at(-1), assigned_to=assignee["id"]
        )
        url = f"/api/tasks/{task['id']}"
        assert (await client.get(url, headers=headers)).json() == task
        bulk = await client.post(
            "/api/tasks/bulk", headers=headers, json={"tasks": [{"title": f"bulk {term}"}]}
        )
        assert bulk.status_code == 201
        listed = await client.get("/api/tasks", headers=headers, params={"search": term})
        assert listed.status_code == 200 and listed.json()["total"] == 2
        updated = await client.put(url, headers=assignee_headers, json={"priority": "urgent"})
        assert updated.status_code == 200
        assert (await client.get(url, headers=headers)).json()["priority"] == "urgent"
        notice = await client.post(f"{url}/notify-overdue", headers=headers)
        assert notice.status_code == 202
        sweep = await client.post(
            "/internal/tasks/overdue-sweep", headers=service_headers(down.state.settings.SECRET_KEY)
        )
        assert sweep.status_code == 200
        assert (await client.get(f"/api/tasks/{uuid.uuid4()}", headers=headers)).status_code == 404
        assert (await client.delete(url, headers=headers)).status_code == 204
        assert (await client.get(url, headers=headers)).status_code == 404
        listed = await client.get("/api/tasks", headers=headers, params={"search": term})
        assert listed.json()["total"] == 1
        assert (await client.get("/health/live")).status_code == 200
    assert creator["id"] == task["created_by"]


async def test_nothing_stale_is_served_after_a_redis_outage(start_tasks_app, user) -> None:
    """A write made while Redis was unreachable could not drop the cached entries; once Redis
    is back they must not be served."""
    proxy = TcpProxy(6379, REDIS_HOST)
    proxy.start()
    try:
        async with start_tasks_app(
            REDIS_HOST="127.0.0.1", REDIS_PORT=proxy.port, REDIS_DB=REDIS_DB
        ) as (_, client):
            headers = user[1]
            task = await create_task(client, headers, title="before the outage")
            url = f"/api/tasks/{task['id']}"
            assert (await client.get(url, headers=headers)).json()["title"] == "before the outage"
            proxy.stop()
            changed = await client.put(url, headers=headers, json={"title": "during the outage"})
            assert changed.status_code == 200
            assert (await client.get(url, headers=headers)).json()["title"] == "during the outage"
            proxy.start()
            assert (await client.get(url, headers=headers)).json()["title"] == "during the outage"
            assert (await client.get(url, headers=headers)).json()["title"] == "during the outage"
    finally:
        proxy.stop()


async def test_a_read_overlapping_a_write_does_not_cache_the_old_state(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    """A read that began before a write and ends after the write dropped the cache has the
    old state in hand: it may answer with it, but must not cache it as current."""
    headers = user[1]
    task = await create_task(client, headers, status="todo", due_date=at(-1))
    url = f"/api/tasks/{task['id']}"
    async with app.state.database.engine.connect() as blocker:
        # The read starts (and reads the cache generation), then waits behind this lock...
        await blocker.execute(text("LOCK TABLE tags IN ACCESS EXCLUSIVE MODE"))
        reader = asyncio.create_task(client.get(url, headers=headers))
        await wait_for_a_lock_waiter(app)
        # ...while a write commits and drops the cache, as every write does after its commit
        # (made here in SQL: any write through the service would read tags, and wait too).
        async with app.state.database.engine.begin() as writer:
            await writer.execute(
                text("UPDATE tasks SET status = 'overdue' WHERE id = :id"), {"id": task["id"]}
            )
        await app.state.cache.invalidate()
        await blocker.rollback()
    # Which state the overlapping read answers with depends on when its snapshot was taken.
    assert (await reader).json()["status"] in ("todo", "overdue")
    # ...and the next read must not be served that pre-write state from the cache.
    assert (await client.get(url, headers=headers)).json()["status"] == "overdue"


async def wait_for_a_lock_waiter(app: FastAPI) -> None:
    for _ in range(500):
        async with app.state.database.sessionmaker() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the read never waited for the lock")
