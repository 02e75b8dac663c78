"""A task assigned through the gateway is one trace from the request to the notifier's handling
of the event: the gateway's span, tasks' span, the outbox relay's publish and the notifier's
consumer span, across real RabbitMQ (the trace context travels in the outbox row and the AMQP
headers). Identity, tasks and the notifier run in-process on RabbitMQ, spans kept in memory."""

import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from identity.app import create_app as create_identity
from identity.settings import IdentitySettings
from notifier.app import create_app as create_notifier
from notifier.settings import NotifierSettings
from taskhub_common.http import register_local_app
from taskhub_common.logs import JsonFormatter
from taskhub_common.testing import (
    RABBITMQ_URL,
    REDIS_HOST,
    bearer,
    create_task,
    eventually,
    new_user,
    recorded_spans,
    recreate_database,
    wait_in_directory,
)
from taskhub_common.testing.suite import Suite
from tasks.app import create_app as create_tasks
from tasks.settings import TasksSettings

SUITE = Suite("event_trace")
NOTIFIER_URL = "http://notifier.event_trace-test"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


class Lines(logging.Handler):
    """The JSON log lines written meanwhile, as the services write them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@dataclass
class Apps:
    gateway: httpx.AsyncClient
    tasks: FastAPI


@pytest.fixture(scope="module")
async def apps(spans: InMemorySpanExporter) -> AsyncIterator[Apps]:
    await recreate_database(SUITE.database)
    env = SUITE.env(RABBITMQ_URL=RABBITMQ_URL)
    tasks = create_tasks(TasksSettings(**env))
    services = [
        (SUITE.identity_url, create_identity(IdentitySettings(**env))),
        (SUITE.tasks_url, tasks),
        (NOTIFIER_URL, create_notifier(NotifierSettings(**env))),
    ]
    started = []
    try:
        for url, application in services:
            register_local_app(url, application)
            lifespan = application.router.lifespan_context(application)
            await lifespan.__aenter__()
            started.append(lifespan)
        front = create_gateway(
            GatewaySettings(
                IDENTITY_URL=SUITE.identity_url,
                TASKS_URL=SUITE.tasks_url,
                NOTIFIER_URL=NOTIFIER_URL,
                REDIS_HOST=REDIS_HOST,
                ENVIRONMENT="test",
            )
        )
        async with (
            front.router.lifespan_context(front),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=front), base_url="http://gateway", timeout=30
            ) as client,
        ):
            yield Apps(client, tasks)
    finally:
        for lifespan in reversed(started):
            await lifespan.__aexit__(None, None, None)


def served(spans: list[ReadableSpan], host: str, method: str) -> list[ReadableSpan]:
    """The spans of the requests a host took (in one process the callee's span is INTERNAL, not
    SERVER: its parent, the client span, is in the same process)."""
    return [
        span
        for span in spans
        if span.attributes.get("http.server_name") == host
        and span.attributes.get("http.method") == method
    ]


def published(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return [
        span
        for span in spans
        if span.kind == SpanKind.PRODUCER and span.name == "task.assigned publish"
    ]


def notifier_handling(spans: Sequence[ReadableSpan], publish: ReadableSpan) -> list[ReadableSpan]:
    """The notifier's consumer span of the event `publish` sent: under it when the event came
    alone, or, when it came in a batch with others, the batch's span, linked to it."""
    sent = publish.context.span_id
    return [
        span
        for span in spans
        if span.kind == SpanKind.CONSUMER
        and span.attributes.get("messaging.destination.name") == "notifier.events"
        and (
            (span.parent is not None and span.parent.span_id == sent)
            or any(link.context.span_id == sent for link in span.links)
        )
    ]


def descends_from(span: ReadableSpan, ancestor: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    by_id = {candidate.context.span_id: candidate for candidate in spans}
    while span.parent is not None:
        if span.parent.span_id == ancestor.context.span_id:
            return True
        if span.parent.span_id not in by_id:
            return False
        span = by_id[span.parent.span_id]
    return False


async def test_an_assignment_is_one_trace_from_the_gateway_to_the_notifier(
    apps: Apps, spans: InMemorySpanExporter
) -> None:
    gateway = apps.gateway
    owner = (await gateway.post("/api/auth/register", json=new_user())).json()
    assignee = (await gateway.post("/api/auth/register", json=new_user())).json()
    await wait_in_directory(apps.tasks, assignee["user"]["id"])
    headers = bearer(owner["access_token"])
    task = await create_task(gateway, headers)

    lines = Lines()
    logging.getLogger().addHandler(lines)
    spans.clear()
    try:
        response = await gateway.put(
            f"/api/tasks/{task['id']}",
            headers=headers,
            json={"assigned_to": assignee["user"]["id"]},
        )
        assert response.status_code == 200, response.text

        async def notifier_handled() -> bool:
            finished = spans.get_finished_spans()
            return any(notifier_handling(finished, publish) for publish in published(finished))

        await eventually(notifier_handled, "the notifier handled task.assigned", timeout=30)
    finally:
        logging.getLogger().removeHandler(lines)
    finished = list(spans.get_finished_spans())
    (front,) = [span for span in served(finished, "gateway", "PUT") if span.parent is None]
    trace_id = front.context.trace_id
    (in_tasks,) = served(finished, SUITE.tasks_url.removeprefix("http://"), "PUT")
    (publish,) = published(finished)
    (consume,) = notifier_handling(finished, publish)
    # One trace: the gateway's request, tasks' request under it, the relay's publish under the
    # request that wrote the outbox row, and the notifier's handling under the publish.
    for span in (in_tasks, publish):
        assert span.context.trace_id == trace_id, span.name
    assert descends_from(in_tasks, front, finished)
    assert descends_from(publish, in_tasks, finished)
    if consume.parent is not None:
        assert consume.name == "task.assigned process"
        assert consume.context.trace_id == trace_id
    else:
        # The event came with others (task.created, just before it): one span for the batch,
        # linked to each event's trace.
        assert consume.name == "notifier.events process"
        assert trace_id in {link.context.trace_id for link in consume.links}
    # Every log line meanwhile names a trace and a span; the request's lines name its trace.
    assert lines.lines
    for line in lines.lines:
        assert len(line.get("trace_id", "")) == 32 and len(line.get("span_id", "")) == 16, line
    assert any(line["trace_id"] == format(trace_id, "032x") for line in lines.lines)
