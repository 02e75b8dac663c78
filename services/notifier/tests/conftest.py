"""The notifier in-process, with a real identity and a real tasks service beside it, all on one
real PostgreSQL database (a schema each) and the shared in-process bus, and a real SMTP server
(aiosmtpd) that the tests start, stop and read.

Identity issues the tokens and publishes `user.*` (the notifier's directory and addresses);
tasks publishes `task.*` and answers the internal task reference and the overdue sweep.
"""

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

from notifier.app import create_app
from notifier.settings import NotifierSettings
from taskhub_common import testing
from taskhub_common.testing import create_task, scalar
from taskhub_common.testing.suite import Suite, User, UserFactory

SUITE = Suite("notifier")
identity_app, identity, tasks_app, tasks, client, make_user = SUITE.shared_fixtures()

APP_URL = "https://app.taskhub.test"
# The clock's interval in these tests: short, so the overdue test need not wait minutes.
SCAN_INTERVAL = 1.0
# Waits are generous: the tests share a small machine.
WAIT = 15.0

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


def notifier_settings(mail_sink: MailSink, **overrides: Any) -> NotifierSettings:
    defaults = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": mail_sink.port,
        "APP_URL": APP_URL,
        "EMAIL_FROM": "noreply@taskhub.test",
        "MAIL_POLL_SECONDS": 0.2,
        "MAIL_RETRY_SECONDS": 0.1,
        "REMINDER_INTERVAL": 0.2,
        "OVERDUE_SCAN_INTERVAL": SCAN_INTERVAL,
    }
    return NotifierSettings(**SUITE.env(**{**defaults, **overrides}))


@pytest.fixture(scope="session")
async def app(
    identity_app: FastAPI, tasks_app: FastAPI, mail_sink: MailSink
) -> AsyncIterator[FastAPI]:
    application = create_app(notifier_settings(mail_sink))
    async with application.router.lifespan_context(application):
        yield application


async def rows(app: FastAPI, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with app.state.database.sessionmaker() as session:
        return [dict(row._mapping) for row in await session.execute(text(sql), params)]


async def execute(app: FastAPI, sql: str, **params: Any) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text(sql), params)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT
) -> None:
    """The shared wait, with this suite's longer default."""
    await testing.eventually(check, what, timeout)


@pytest.fixture(scope="session")
def directories(app: FastAPI, tasks_app: FastAPI) -> list[FastAPI]:
    """A new user must be known to the notifier (its directory and its address come from the
    same event, in one transaction) and to tasks (to be named an assignee)."""
    return [app, tasks_app]


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


__all__ = ["User", "create_task", "scalar"]
