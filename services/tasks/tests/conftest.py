"""The tasks service in-process, with a real identity beside it, on a real PostgreSQL.

Identity issues the tokens (the tasks app verifies them against its JWKS) and publishes
`user.registered` on the shared in-process bus, which fills the tasks service's user directory.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from identity.app import create_app as create_identity
from identity.settings import IdentitySettings
from taskhub_common.contracts import TaskData
from taskhub_common.events import EventEnvelope
from taskhub_common.http import register_local_app
from taskhub_common.outbox import outbox
from taskhub_common.testing import bearer, database_env, new_user, recreate_database
from tasks.app import create_app
from tasks.settings import TasksSettings

DATABASE = "taskhub_test_tasks"
IDENTITY_URL = "http://identity.tasks-test"

User = tuple[dict[str, Any], dict[str, str]]
UserFactory = Callable[..., Awaitable[User]]


def tasks_settings(**overrides: Any) -> TasksSettings:
    return TasksSettings(
        **database_env(DATABASE),
        IDENTITY_URL=IDENTITY_URL,
        ENVIRONMENT="test",
        EVENT_RETRY_DELAYS_MS="50,100",
        **overrides,
    )


def word() -> str:
    """A word no other test uses (for a tag, a title or a search)."""
    return "w" + uuid.uuid4().hex[:12]


def at(days: float) -> str:
    """An ISO-8601 UTC time `days` from now (negative: in the past)."""
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture(scope="session")
async def identity_app() -> AsyncIterator[FastAPI]:
    await recreate_database(DATABASE)
    application = create_identity(IdentitySettings(**database_env(DATABASE), ENVIRONMENT="test"))
    register_local_app(IDENTITY_URL, application)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def app(identity_app: FastAPI) -> AsyncIterator[FastAPI]:
    """The tasks service with the in-process cache (REDIS_HOST unset)."""
    application = create_app(tasks_settings())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def identity(identity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=identity_app), base_url=IDENTITY_URL
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tasks"
    ) as http:
        yield http


@pytest.fixture
def start_tasks_app(app: FastAPI) -> Callable[..., contextlib.AbstractAsyncContextManager]:
    """Another started tasks app (e.g. with Redis) and a client of it, on the same database.

    It takes over the in-process bus's `tasks.events` subscription while it runs; the session's
    app gets it back when it stops.
    """

    @contextlib.asynccontextmanager
    async def started(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        other = create_app(tasks_settings(**overrides))
        async with (
            other.router.lifespan_context(other),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=other), base_url="http://tasks-2"
            ) as http,
        ):
            yield other, http

    return started


async def wait_in_directory(app: FastAPI, user_id: str, timeout: float = 5.0) -> None:
    """Until identity's user.registered event has reached the tasks service's directory."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with app.state.database.sessionmaker() as session:
            found = await session.scalar(
                text("SELECT count(*) FROM users WHERE id = :id"), {"id": uuid.UUID(user_id)}
            )
        if found:
            return
        assert loop.time() < deadline, f"user {user_id} never reached the tasks directory"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def make_user(identity: httpx.AsyncClient, app: FastAPI) -> UserFactory:
    """Registers a user through identity: (the user as identity returns it, auth headers).

    By default waits until the tasks service's directory knows the user, so they can be named
    as an assignee."""

    async def make(in_directory: bool = True) -> User:
        response = await identity.post("/api/auth/register", json=new_user())
        assert response.status_code == 201, response.text
        body = response.json()
        if in_directory:
            await wait_in_directory(app, body["user"]["id"])
        return body["user"], bearer(body["access_token"])

    return make


@pytest.fixture(scope="session")
async def user(make_user: UserFactory) -> User:
    """One user for the tests that need a caller but no particular relation to anyone."""
    return await make_user()


async def events_of(app: FastAPI, aggregate_id: str) -> list[dict[str, Any]]:
    """The outbox rows about one aggregate, oldest first: routing key plus the envelope."""
    async with app.state.database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.routing_key, outbox.c.payload, outbox.c.sent_at)
                .where(outbox.c.payload["aggregate_id"].astext == aggregate_id)
                .order_by(outbox.c.position)
            )
        ).all()
    return [
        {"routing_key": row.routing_key, "sent": row.sent_at is not None, **row.payload}
        for row in rows
    ]


async def count_rows(app: FastAPI, table: str) -> int:
    assert table in {"tasks", "outbox", "tags", "task_tags"}
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608


ENVELOPE_FIELDS = {
    "id",
    "type",
    "version",
    "occurred_at",
    "producer",
    "actor_id",
    "aggregate_id",
    "data",
}


def check_envelope(event: dict, event_type: str, actor_id: str | None, task_id: str) -> None:
    assert set(event) - {"routing_key", "sent"} == ENVELOPE_FIELDS
    assert event["routing_key"] == event["type"] == event_type
    assert event["version"] == 1
    assert event["producer"] == "tasks"
    assert event["actor_id"] == actor_id
    assert event["aggregate_id"] == task_id == event["data"]["id"]
    uuid.UUID(event["id"])
    occurred_at = parse_time(event["occurred_at"])
    assert occurred_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - occurred_at) < timedelta(minutes=1)
    EventEnvelope.model_validate({k: v for k, v in event.items() if k in ENVELOPE_FIELDS})
    # The published contract: one shape per type, whoever emits it.
    TaskData.model_validate(event["data"], strict=False)
    assert set(event["data"]) - {"changes"} == set(TaskData.model_fields) - {"changes"}


async def wait_all_sent(app: FastAPI, task_id: str) -> list[dict]:
    """The relay publishes every row (which it can only do with a valid envelope)."""
    for _ in range(300):
        events = await events_of(app, task_id)
        if all(event["sent"] for event in events):
            return events
        await asyncio.sleep(0.01)
    raise AssertionError(f"events of {task_id} were never published")
