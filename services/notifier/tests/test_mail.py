"""Email: a real SMTP server receives each message once, through outages and with several
workers; the embedded mode writes .eml files."""

import asyncio
import email
import email.policy
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from notifier.app import create_app
from notifier.delivery import Notice
from notifier.mailer import SmtpTransport
from notifier.models import NotificationType
from notifier.workers import MailWorker
from taskhub_common.testing import bearer, new_user, recorded_spans, wait_in_directory
from taskhub_common.tracing import tracer_provider

from .conftest import (
    APP_URL,
    MailSink,
    User,
    assign,
    create_task,
    eventually,
    notifier_settings,
    rows,
)


async def wait_mail(sink: MailSink, address: str, count: int = 1) -> list:
    async def arrived() -> bool:
        return len(sink.to(address)) >= count

    await eventually(arrived, f"{count} messages reached {address}")
    return sink.to(address)


async def wait_sent(app: FastAPI, sql: str, **params) -> dict:
    """The one outbox row `sql` selects, once marked sent (the commit that marks it follows
    the server's acceptance)."""
    found: dict = {}

    async def sent() -> bool:
        nonlocal found
        (found,) = await rows(app, sql, **{k: uuid.UUID(v) for k, v in params.items()})
        return found["sent_at"] is not None

    await eventually(sent, "the message is marked sent")
    return found


def notice(index: int = 0) -> Notice:
    return Notice(
        type=NotificationType.TASK_ASSIGNED,
        cause_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        title="New task assigned",
        message=f"message {index}",
    )


async def deliver_many(app: FastAPI, user: User, count: int) -> None:
    async with app.state.database.sessionmaker() as session, session.begin():
        for index in range(count):
            await app.state.dispatcher.deliver(session, notice(index), [uuid.UUID(user[0]["id"])])
    app.state.mail_queued.set()


async def test_an_assignment_email_arrives_with_its_link_and_headers(
    app: FastAPI, tasks: httpx.AsyncClient, mail_sink: MailSink, alice, bob
) -> None:
    task = await create_task(tasks, alice[1], title="Ship <it> & more")
    await assign(tasks, alice[1], task, bob)
    (message,) = await wait_mail(mail_sink, bob[0]["email"])
    assert message["To"] == bob[0]["email"]
    assert message["From"] == "noreply@taskhub.test"
    assert message["Subject"] == "[TaskHub] New task assigned"
    assert message["List-Unsubscribe"] == f"<{APP_URL}/settings/notifications>"
    assert message["Auto-Submitted"] == "auto-generated"
    link = f"{APP_URL}/tasks/{task['id']}"
    plain = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert 'You have been assigned to "Ship <it> & more".' in plain
    assert link in plain
    assert f'href="{link}"' in html
    assert "Ship &lt;it&gt; &amp; more" in html, "the task's title is escaped in HTML"
    row = await wait_sent(app, "SELECT * FROM mail_outbox WHERE user_id = :u", u=bob[0]["id"])
    assert row["attempts"] == 1
    assert message["Message-ID"] == f"<{row['id']}@taskhub.test>"
    assert mail_sink.to(alice[0]["email"]) == [], "the actor gets no email"


async def test_messages_wait_for_the_smtp_server_and_arrive_once(
    app: FastAPI, mail_sink: MailSink, bob
) -> None:
    mail_sink.stop()
    try:
        await deliver_many(app, bob, 5)

        async def tried() -> bool:
            pending = await rows(
                app,
                "SELECT attempts FROM mail_outbox WHERE user_id = :u AND sent_at IS NULL",
                u=uuid.UUID(bob[0]["id"]),
            )
            return len(pending) == 5 and all(row["attempts"] >= 2 for row in pending)

        await eventually(tried, "the worker tried twice while the server was down")
        assert mail_sink.to(bob[0]["email"]) == []
    finally:
        mail_sink.start()
    messages = await wait_mail(mail_sink, bob[0]["email"], 5)
    await asyncio.sleep(1)  # a second copy would have come by now
    messages = mail_sink.to(bob[0]["email"])
    assert len(messages) == 5
    assert sorted(m.get_body(preferencelist=("plain",)).get_content()[:9] for m in messages) == [
        f"message {index}" for index in range(5)
    ]


async def test_two_more_workers_on_one_database_send_each_message_once(
    app: FastAPI, mail_sink: MailSink, bob
) -> None:
    settings = app.state.settings
    workers = [
        MailWorker(
            app.state.database, SmtpTransport(settings), settings, asyncio.Event(), batch_size=4
        )
        for _ in range(2)
    ]
    await deliver_many(app, bob, 40)
    # Both of them and the app's own worker, at the same time, until nothing is left.
    while sum(await asyncio.gather(*(worker.send_batch() for worker in workers))):
        pass
    messages = await wait_mail(mail_sink, bob[0]["email"], 40)
    await asyncio.sleep(0.5)
    ids = Counter(message["Message-ID"] for message in mail_sink.to(bob[0]["email"]))
    assert len(ids) == 40
    assert set(ids.values()) == {1}, "no message twice"
    assert len(messages) >= 40


async def test_a_message_waits_for_its_recipients_address(
    app: FastAPI, mail_sink: MailSink
) -> None:
    unknown = uuid.uuid4()
    async with app.state.database.sessionmaker() as session, session.begin():
        await app.state.dispatcher.deliver(session, notice(), [unknown])
    app.state.mail_queued.set()

    async def tried() -> bool:
        (row,) = await rows(app, "SELECT * FROM mail_outbox WHERE user_id = :u", u=unknown)
        return row["attempts"] >= 1 and row["last_error"] == "address not known yet"

    await eventually(tried, "the worker found no address")
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("INSERT INTO user_emails VALUES (:u, 'late@example.com', now())"), {"u": unknown}
        )
    (message,) = await wait_mail(mail_sink, "late@example.com")
    assert message["Subject"] == "[TaskHub] New task assigned"


async def test_a_batch_of_mail_is_a_trace_linked_to_each_message_cause(
    app: FastAPI, mail_sink: MailSink, bob
) -> None:
    settings = app.state.settings
    worker = MailWorker(app.state.database, SmtpTransport(settings), settings, asyncio.Event())
    with recorded_spans() as spans:
        causes, notices = [], [notice(index) for index in range(2)]
        for each in notices:
            with tracer_provider().get_tracer("test").start_as_current_span("cause") as cause:
                causes.append(cause.get_span_context())
                async with app.state.database.sessionmaker() as session, session.begin():
                    await app.state.dispatcher.deliver(session, each, [uuid.UUID(bob[0]["id"])])
        # The app's own worker may take either message first: the batches' links, together.
        while await worker.send_batch():
            pass

        async def both_sent() -> bool:
            # Marked sent in the batch's transaction, committed once its span has ended.
            sent = await rows(
                app,
                "SELECT 1 FROM mail_outbox WHERE cause_id = ANY(:causes) AND sent_at IS NOT NULL",
                causes=[each.cause_id for each in notices],
            )
            return len(sent) == 2

        await eventually(both_sent, "both messages are marked sent")
    batches = [span for span in spans.get_finished_spans() if span.name == "mail batch"]
    assert batches and all(batch.parent is None for batch in batches)
    linked = {(link.context.trace_id, link.context.span_id) for b in batches for link in b.links}
    # A batch may also carry messages of other tests: each cause among the links.
    assert {(cause.trace_id, cause.span_id) for cause in causes} <= linked


@pytest.fixture
async def embedded_notifier(
    tmp_path: Path, identity_app: FastAPI, tasks_app: FastAPI, mail_sink: MailSink
) -> AsyncIterator[FastAPI]:
    """A second notifier without SMTP_HOST (the embedded mode's mail), in its own schema and on
    its own queue, so it hears every event beside the first one."""
    settings = notifier_settings(
        mail_sink, SERVICE_NAME="notifier_embedded", SMTP_HOST="", DATA_DIR=str(tmp_path)
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_without_smtp_host_each_message_is_an_eml_file(
    embedded_notifier: FastAPI, identity: httpx.AsyncClient, tasks: httpx.AsyncClient, tmp_path
) -> None:
    users = []
    for _ in range(2):
        response = await identity.post("/api/auth/register", json=new_user())
        body = response.json()
        await wait_in_directory(embedded_notifier, body["user"]["id"])
        users.append((body["user"], bearer(body["access_token"])))
    (owner, assignee) = users
    task = await create_task(tasks, owner[1], assigned_to=assignee[0]["id"])
    folder = tmp_path / "mail"

    async def written() -> bool:
        return folder.is_dir() and any(folder.glob("*.eml"))

    await eventually(written, "an .eml file is written")
    (path,) = folder.glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == assignee[0]["email"]
    assert message["Subject"] == "[TaskHub] New task assigned"
    assert f"{APP_URL}/tasks/{task['id']}" in message.get_body(("plain",)).get_content()
    assert not list(folder.glob("*.part")), "no half-written file is left"
    await wait_sent(embedded_notifier, "SELECT * FROM mail_outbox")
