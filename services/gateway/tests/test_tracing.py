"""A request through the gateway to tasks is one trace: the gateway's server span, its client
span to tasks, and tasks' server span under it (spans kept in memory)."""

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from taskhub_common.http import register_local_app
from taskhub_common.testing import bearer, new_user, recorded_spans
from tasks.app import create_app as create_tasks
from tasks.settings import TasksSettings

from .conftest import SUITE


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


@pytest.fixture(scope="module")
async def tasks_app(identity_app: FastAPI, spans: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    application = create_tasks(TasksSettings(**SUITE.env()))
    register_local_app(SUITE.tasks_url, application)
    async with application.router.lifespan_context(application):
        yield application


async def test_a_request_through_the_gateway_to_tasks_is_one_trace(
    make_gateway, client_for, tasks_app: FastAPI, spans: InMemorySpanExporter
) -> None:
    async with make_gateway(TASKS_URL=SUITE.tasks_url) as gateway, client_for(gateway) as client:
        token = (await client.post("/api/auth/register", json=new_user())).json()["access_token"]
        spans.clear()
        response = await client.get("/api/tasks", headers=bearer(token))
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    # A request's span, by the host and route that took it. (In one process the callee's span
    # is INTERNAL rather than SERVER: its parent, the client span, is in the same process.)
    served = {
        (span.attributes["http.server_name"], span.attributes["http.route"]): span
        for span in finished
        if "http.route" in span.attributes
    }
    gateway_span = served[("gateway", "/api/{path:path}")]
    tasks_span = served[(SUITE.tasks_url.removeprefix("http://"), "/api/tasks")]
    # Every span of the request is in its trace (the relay's publish of the registration's
    # event, which may come meanwhile, is in the registration's; a round of background work,
    # such as the notifier's reminder clock, is a trace of its own).
    requests = [
        span
        for span in finished
        if "messaging.system" not in span.attributes
        and span.instrumentation_scope.name != "taskhub.background"
    ]
    assert {span.context.trace_id for span in requests} == {gateway_span.context.trace_id}
    (call,) = [
        span
        for span in finished
        if span.kind == SpanKind.CLIENT and span.context.span_id == tasks_span.parent.span_id
    ]
    assert call.attributes["http.url"].startswith(f"{SUITE.tasks_url}/api/tasks")
    assert call.parent.span_id == gateway_span.context.span_id
