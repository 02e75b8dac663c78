"""The tasks service in-process, with a real identity beside it, on a real PostgreSQL (the
shared fixtures of taskhub_common.testing.suite).

Identity issues the tokens (the tasks app verifies them against its JWKS) and publishes
`user.registered` on the shared in-process bus, which fills the tasks service's user directory.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_common.contracts import TaskData
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import asgi_client, outbox_events, parse_time
from taskhub_common.testing.suite import Suite, User, UserFactory
from tasks.app import create_app
from tasks.settings import TasksSettings

SUITE = Suite("tasks")
shared = SUITE.shared_fixtures()
identity_app, identity, client, make_user = (
    shared.identity_app,
    shared.identity,
    shared.client,
    shared.make_user,
)


def tasks_settings(**overrides: Any) -> TasksSettings:
    return TasksSettings(**SUITE.env(**overrides))


def at(days: float) -> str:
    """An ISO-8601 UTC time `days` from now (negative: in the past)."""
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.fixture(scope="session")
async def app(identity_app: FastAPI) -> AsyncIterator[FastAPI]:
    """The tasks service with the in-process cache (REDIS_HOST unset)."""
    application = create_app(tasks_settings())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def directories(app: FastAPI) -> list[FastAPI]:
    """A new user must be in the tasks directory before a test names them an assignee."""
    return [app]


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
            asgi_client(other, "http://tasks-2") as http,
        ):
            yield other, http

    return started


@pytest.fixture(scope="session")
async def user(make_user: UserFactory) -> User:
    """One user for the tests that need a caller but no particular relation to anyone."""
    return await make_user()


async def events_of(app: FastAPI, aggregate_id: str) -> list[dict[str, Any]]:
    """The outbox rows about one aggregate, oldest first: routing key plus the envelope."""
    return await outbox_events(app, aggregate_id=aggregate_id)


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
