"""The comments service in-process, with a real identity and a real tasks service beside it,
all on one real PostgreSQL database (a schema each) and the shared in-process bus.

Identity issues the tokens and publishes `user.*` (which fill the comments service's author
directory); tasks answers the internal task reference and publishes `task.deleted`.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from comments.app import create_app
from comments.settings import CommentsSettings
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import outbox
from taskhub_common.testing import create_task, eventually, outbox_events, parse_time
from taskhub_common.testing.suite import Suite, User, UserFactory

SUITE = Suite("comments")
identity_app, identity, tasks_app, tasks, client, make_user = SUITE.shared_fixtures()


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


def comments_settings(**overrides: Any) -> CommentsSettings:
    return CommentsSettings(**SUITE.env(**overrides))


def public_user(user: dict) -> dict:
    """A user as the comments service shows them: identity's fields, the email hidden."""
    return {**user, "email": None}


@pytest.fixture(scope="session")
async def app(identity_app: FastAPI, tasks_app: FastAPI) -> AsyncIterator[FastAPI]:
    application = create_app(comments_settings())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def directories(app: FastAPI, tasks_app: FastAPI) -> list[FastAPI]:
    """A new user must be known to comments and to tasks (to be named an assignee)."""
    return [app, tasks_app]


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
    return await outbox_events(app, data_task_id=task_id)


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
