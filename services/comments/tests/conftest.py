"""The comments service in-process, with a real identity and a real tasks service beside it,
all on one real PostgreSQL database (a schema each) and the shared in-process bus.

Identity issues the tokens and publishes `user.*` (which fill the comments service's author
directory); tasks answers the internal task reference and publishes `task.deleted`.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from comments.app import create_app
from comments.settings import CommentsSettings
from identity.app import create_app as create_identity
from identity.settings import IdentitySettings
from taskhub_common.events import EventEnvelope
from taskhub_common.http import register_local_app
from taskhub_common.outbox import outbox
from taskhub_common.testing import bearer, create_task, database_env, new_user, recreate_database
from tasks.app import create_app as create_tasks
from tasks.settings import TasksSettings

DATABASE = "taskhub_test_comments"
IDENTITY_URL = "http://identity.comments-test"
TASKS_URL = "http://tasks.comments-test"

User = tuple[dict[str, Any], dict[str, str]]
UserFactory = Callable[..., Awaitable[User]]

COMMENT_FIELDS = {
    "id",
    "task_id",
    "user_id",
    "author",
    "content",
    "content_html",
    "is_deleted",
    "created_at",
    "updated_at",
}
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


def shared_settings() -> dict[str, Any]:
    return {
        **database_env(DATABASE),
        "IDENTITY_URL": IDENTITY_URL,
        "TASKS_URL": TASKS_URL,
        "ENVIRONMENT": "test",
        "EVENT_RETRY_DELAYS_MS": "50,100",
    }


def comments_settings(**overrides: Any) -> CommentsSettings:
    return CommentsSettings(**{**shared_settings(), **overrides})


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def public_user(user: dict) -> dict:
    """A user as the comments service shows them: identity's fields, the email hidden."""
    return {**user, "email": None}


@pytest.fixture(scope="session")
async def identity_app() -> AsyncIterator[FastAPI]:
    await recreate_database(DATABASE)
    application = create_identity(IdentitySettings(**database_env(DATABASE), ENVIRONMENT="test"))
    register_local_app(IDENTITY_URL, application)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def tasks_app(identity_app: FastAPI) -> AsyncIterator[FastAPI]:
    """The real tasks service (in-process cache), reached by comments under TASKS_URL."""
    application = create_tasks(TasksSettings(**shared_settings()))
    register_local_app(TASKS_URL, application)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def app(identity_app: FastAPI, tasks_app: FastAPI) -> AsyncIterator[FastAPI]:
    application = create_app(comments_settings())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def identity(identity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=identity_app), base_url=IDENTITY_URL
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def tasks(tasks_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=tasks_app), base_url=TASKS_URL
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://comments"
    ) as http:
        yield http


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def scalar(app: FastAPI, sql: str, **params: Any) -> Any:
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(text(sql), params)


async def wait_in_directory(app: FastAPI, user_id: str) -> None:
    """Until identity's user.registered event has reached this service's user directory."""

    async def known() -> bool:
        return bool(
            await scalar(app, "SELECT count(*) FROM users WHERE id = :id", id=uuid.UUID(user_id))
        )

    await eventually(known, f"user {user_id} is in the {app.state.settings.SERVICE_NAME} directory")


@pytest.fixture(scope="session")
def make_user(identity: httpx.AsyncClient, app: FastAPI, tasks_app: FastAPI) -> UserFactory:
    """Registers a user through identity: (the user as identity returns it, auth headers). By
    default waits until both directories know the user (tasks: to be named an assignee)."""

    async def make(in_directory: bool = True) -> User:
        response = await identity.post("/api/auth/register", json=new_user())
        assert response.status_code == 201, response.text
        body = response.json()
        if in_directory:
            await wait_in_directory(app, body["user"]["id"])
            await wait_in_directory(tasks_app, body["user"]["id"])
        return body["user"], bearer(body["access_token"])

    return make


@pytest.fixture(scope="session")
async def alice(make_user: UserFactory) -> User:
    return await make_user()


@pytest.fixture(scope="session")
async def bob(make_user: UserFactory) -> User:
    return await make_user()


@pytest.fixture
async def task(tasks: httpx.AsyncClient, alice: User) -> dict:
    """A fresh task of alice's, per test."""
    return await create_task(tasks, alice[1])


def comments_url(task_id: str, comment_id: str | None = None) -> str:
    url = f"/api/tasks/{task_id}/comments"
    return f"{url}/{comment_id}" if comment_id else url


async def post_comment(
    client: httpx.AsyncClient, headers: dict[str, str], task_id: str, content: str = "Hello"
) -> dict:
    response = await client.post(comments_url(task_id), headers=headers, json={"content": content})
    assert response.status_code == 201, response.text
    return response.json()


async def list_comments(
    client: httpx.AsyncClient, headers: dict[str, str], task_id: str, **params: Any
) -> tuple[list[dict], int]:
    response = await client.get(comments_url(task_id), headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json(), int(response.headers["X-Total-Count"])


async def delete_task(tasks: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> None:
    response = await tasks.delete(f"/api/tasks/{task_id}", headers=headers)
    assert response.status_code == 204, response.text


async def wait_task_deleted(app: FastAPI, task_id: str) -> None:
    """Until task.deleted has reached the comments service."""

    async def flagged() -> bool:
        return bool(
            await scalar(
                app,
                "SELECT count(*) FROM deleted_tasks WHERE task_id = :id",
                id=uuid.UUID(task_id),
            )
        )

    await eventually(flagged, f"task {task_id} is known deleted")


async def rows_of_task(app: FastAPI, task_id: str) -> list[dict[str, Any]]:
    """The comments table's rows of one task, deleted ones too."""
    async with app.state.database.sessionmaker() as session:
        rows = await session.execute(
            text("SELECT * FROM comments WHERE task_id = :id ORDER BY created_at, id"),
            {"id": uuid.UUID(task_id)},
        )
        return [dict(row._mapping) for row in rows]


async def events_of_task(app: FastAPI, task_id: str) -> list[dict[str, Any]]:
    """The comments service's outbox rows about one task's comments, oldest first."""
    async with app.state.database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.routing_key, outbox.c.payload, outbox.c.sent_at)
                .where(outbox.c.payload["data"]["task_id"].astext == task_id)
                .order_by(outbox.c.position)
            )
        ).all()
    return [
        {"routing_key": row.routing_key, "sent": row.sent_at is not None, **row.payload}
        for row in rows
    ]


async def outbox_size(app: FastAPI) -> int:
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(outbox))


async def wait_all_sent(app: FastAPI, task_id: str) -> list[dict]:
    """The relay publishes every row (which it can only do with a valid envelope)."""
    events: list[dict] = []

    async def sent() -> bool:
        nonlocal events
        events = await events_of_task(app, task_id)
        return all(event["sent"] for event in events)

    await eventually(sent, f"the events of task {task_id}'s comments are published")
    return events


def check_envelope(event: dict, event_type: str, actor_id: str, comment: dict, task: dict) -> None:
    """The tasks service's envelope; `data` is the comment plus the task's people."""
    assert set(event) - {"routing_key", "sent"} == ENVELOPE_FIELDS
    assert event["routing_key"] == event["type"] == event_type
    assert event["version"] == 1
    assert event["producer"] == "comments"
    assert event["actor_id"] == actor_id
    assert event["aggregate_id"] == comment["id"] == event["data"]["id"]
    uuid.UUID(event["id"])
    occurred_at = parse_time(event["occurred_at"])
    assert occurred_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - occurred_at) < timedelta(minutes=1)
    EventEnvelope.model_validate({k: v for k, v in event.items() if k in ENVELOPE_FIELDS})
    data = {k: v for k, v in event["data"].items() if k != "changes"}
    assert data == {
        **comment,
        "task_creator_id": task["created_by"],
        "task_assignee_id": task["assigned_to"],
    }
