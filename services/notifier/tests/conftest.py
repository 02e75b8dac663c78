"""The notifier in-process, with a real identity and a real tasks service beside it, all on one
real PostgreSQL database (a schema each) and the shared in-process bus, and a real SMTP server
(aiosmtpd) that the tests start, stop and read.

Identity issues the tokens and publishes `user.*` (the notifier's directory and addresses);
tasks publishes `task.*` and answers the internal task reference and the overdue sweep.
"""

import asyncio
import email
import email.policy
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import text

from identity.app import create_app as create_identity
from identity.settings import IdentitySettings
from notifier.app import create_app
from notifier.settings import NotifierSettings
from taskhub_common.http import register_local_app
from taskhub_common.testing import bearer, create_task, database_env, new_user, recreate_database
from tasks.app import create_app as create_tasks
from tasks.settings import TasksSettings

DATABASE = "taskhub_test_notifier"
IDENTITY_URL = "http://identity.notifier-test"
TASKS_URL = "http://tasks.notifier-test"
APP_URL = "https://app.taskhub.test"
# The clock's interval in these tests: short, so the overdue test need not wait minutes.
SCAN_INTERVAL = 1.0

User = tuple[dict[str, Any], dict[str, str]]
UserFactory = Callable[..., Awaitable[User]]

NOTIFICATION_FIELDS = {
    "id",
    "user_id",
    "task_id",
    "type",
    "title",
    "message",
    "is_read",
    "created_at",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MailSink:
    """A real SMTP server (aiosmtpd) on a fixed port that tests can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list[EmailMessage]:
        return [message for recipients, message in self.messages if address in recipients]


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink()
    sink.start()
    yield sink
    sink.stop()


def shared_settings() -> dict[str, Any]:
    return {
        **database_env(DATABASE),
        "IDENTITY_URL": IDENTITY_URL,
        "TASKS_URL": TASKS_URL,
        "ENVIRONMENT": "test",
        "EVENT_RETRY_DELAYS_MS": "50,100",
    }


def notifier_settings(mail_sink: MailSink, **overrides: Any) -> NotifierSettings:
    return NotifierSettings(
        **{
            **shared_settings(),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": mail_sink.port,
            "APP_URL": APP_URL,
            "EMAIL_FROM": "noreply@taskhub.test",
            "MAIL_POLL_SECONDS": 0.2,
            "MAIL_RETRY_SECONDS": 0.1,
            "REMINDER_INTERVAL": 0.2,
            "OVERDUE_SCAN_INTERVAL": SCAN_INTERVAL,
            **overrides,
        }
    )


@pytest.fixture(scope="session")
async def identity_app() -> AsyncIterator[FastAPI]:
    await recreate_database(DATABASE)
    application = create_identity(IdentitySettings(**database_env(DATABASE), ENVIRONMENT="test"))
    register_local_app(IDENTITY_URL, application)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def tasks_app(identity_app: FastAPI) -> AsyncIterator[FastAPI]:
    application = create_tasks(TasksSettings(**shared_settings()))
    register_local_app(TASKS_URL, application)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def app(
    identity_app: FastAPI, tasks_app: FastAPI, mail_sink: MailSink
) -> AsyncIterator[FastAPI]:
    application = create_app(notifier_settings(mail_sink))
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
        transport=httpx.ASGITransport(app=app), base_url="http://notifier"
    ) as http:
        yield http


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def scalar(app: FastAPI, sql: str, **params: Any) -> Any:
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(text(sql), params)


async def rows(app: FastAPI, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with app.state.database.sessionmaker() as session:
        return [dict(row._mapping) for row in await session.execute(text(sql), params)]


async def execute(app: FastAPI, sql: str, **params: Any) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text(sql), params)


async def wait_known(app: FastAPI, table: str, column: str, key: uuid.UUID, what: str) -> None:
    async def known() -> bool:
        return bool(await scalar(app, f"SELECT count(*) FROM {table} WHERE {column} = :k", k=key))  # noqa: S608

    await eventually(known, what)


@pytest.fixture(scope="session")
def make_user(identity: httpx.AsyncClient, app: FastAPI, tasks_app: FastAPI) -> UserFactory:
    """Registers a user through identity: (the user, auth headers), once the notifier knows
    their address and tasks knows them (to be named an assignee)."""

    async def make() -> User:
        response = await identity.post("/api/auth/register", json=new_user())
        assert response.status_code == 201, response.text
        body = response.json()
        user_id = uuid.UUID(body["user"]["id"])
        await wait_known(app, "user_emails", "user_id", user_id, "the notifier knows the user")
        await wait_known(tasks_app, "users", "id", user_id, "tasks knows the user")
        return body["user"], bearer(body["access_token"])

    return make


@pytest.fixture
async def alice(make_user: UserFactory) -> User:
    """A fresh user per test: each test reads its own users' notifications."""
    return await make_user()


@pytest.fixture
async def bob(make_user: UserFactory) -> User:
    return await make_user()


async def notices_of(app: FastAPI, user: User) -> list[dict[str, Any]]:
    """The user's notification rows, oldest first (straight from the table)."""
    return await rows(
        app,
        "SELECT * FROM notifications WHERE user_id = :u ORDER BY created_at, id",
        u=uuid.UUID(user[0]["id"]),
    )


async def wait_notices(app: FastAPI, user: User, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = await notices_of(app, user)
        return len(found) >= count

    await eventually(enough, f"{user[0]['username']} has {count} notices")
    return found


async def wait_handled(app: FastAPI, tasks_app: FastAPI, task: dict, event_type: str) -> None:
    """Until the notifier has handled every `event_type` event tasks wrote about the task."""
    events = await rows(
        tasks_app,
        "SELECT id FROM outbox WHERE routing_key = :t AND payload->>'aggregate_id' = :a",
        t=event_type,
        a=task["id"],
    )
    assert events, f"tasks wrote no {event_type} for the task"

    async def handled() -> bool:
        done = await scalar(
            app,
            "SELECT count(*) FROM inbox WHERE event_id = ANY(:ids)",
            ids=[event["id"] for event in events],
        )
        return done == len(events)

    await eventually(handled, f"the notifier handled {event_type} of task {task['id']}")


async def assign(tasks: httpx.AsyncClient, headers: dict[str, str], task: dict, user: User) -> dict:
    response = await tasks.put(
        f"/api/tasks/{task['id']}", headers=headers, json={"assigned_to": user[0]["id"]}
    )
    assert response.status_code == 200, response.text
    return response.json()


__all__ = ["create_task"]
