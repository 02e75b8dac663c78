"""The embedded mode's pass-through (gateway.in_process): services in the gateway's process, a
request for one of them handed to its app past the gateway's own middleware stack. Identity is
the real service, in-process; the echo service shows what a service is handed."""

import logging
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.in_process import InProcessPassThrough
from gateway.upstreams import Upstream
from taskhub_common.http import register_local_app
from taskhub_common.testing import bearer

from .echo_upstream import echo_app, task_service_app
from .test_proxy import (
    SPOOFING_HEADERS,
    assert_handed_only_the_gateway_s_headers,
    one_server_for_tasks_and_parts,
    token_for,
)

ECHO_URL = "http://echo.in-process-test"
TASK_PARTS_URL = "http://task-parts.in-process-test"


@pytest.fixture(scope="session")
def in_process_echo() -> list[Upstream]:
    register_local_app(ECHO_URL, echo_app())
    return [Upstream("echo", ECHO_URL, ("/api/echo/", "/api/big/"), "")]


@pytest.fixture(scope="session")
def in_process_task_parts() -> list[Upstream]:
    register_local_app(TASK_PARTS_URL, task_service_app())
    return one_server_for_tasks_and_parts(TASK_PARTS_URL)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_lines() -> Iterator[list[logging.LogRecord]]:
    """The access log's records (the gateway's RequestContextMiddleware writes one a request)."""
    lines = Lines()
    logger = logging.getLogger("taskhub.access")
    logger.addHandler(lines)
    yield lines.records
    logger.removeHandler(lines)


async def test_a_service_is_handed_the_request_with_the_gateway_s_headers_only(
    make_gateway, client_for, in_process_echo, access_lines
) -> None:
    async with (
        make_gateway(in_process_echo) as app,
        client_for(InProcessPassThrough(app), "203.0.113.9") as client,
    ):
        token = await token_for(client)
        response = await client.post(
            "/api/echo/a/b?x=1",
            headers={**bearer(token), **SPOOFING_HEADERS},
            json={"hello": "world"},
        )
        assert response.status_code == 200
        refused = await client.get("/api/echo/a")
    seen = response.json()
    assert (seen["path"], seen["query"]) == ("/api/echo/a/b", "x=1")
    # The request id and trace context as sent: the service checks them as the gateway would.
    assert_handed_only_the_gateway_s_headers(seen["headers"], token)
    # Not through the gateway's stack: the access line is the service's to write (this
    # stand-in writes none). A refusal is the gateway's own answer, from its whole stack.
    assert refused.status_code == 401
    assert refused.headers["x-request-id"]
    echoed = [line.getMessage() for line in access_lines if "/api/echo/" in line.getMessage()]
    assert echoed == ["GET /api/echo/a 401"]


async def test_bodies_stream_both_ways(make_gateway, client_for, in_process_echo) -> None:
    async with (
        make_gateway(in_process_echo) as app,
        client_for(InProcessPassThrough(app)) as client,
    ):
        token = await token_for(client)
        sent = await client.post(
            "/api/echo/upload", headers=bearer(token), content=b"x" * 3_000_000
        )
        received = await client.get("/api/big/3000000", headers=bearer(token))
    assert sent.json()["body_size"] == 3_000_000
    assert len(received.content) == 3_000_000


async def test_the_service_s_own_stack_answers_and_the_gateway_counts_and_allows_origins(
    make_gateway, client_for
) -> None:
    origin = "https://app.example.com"
    async with (
        make_gateway(CORS_ORIGINS=origin) as app,
        client_for(InProcessPassThrough(app)) as client,
    ):
        token = await token_for(client)
        me = await client.get("/api/auth/me", headers={**bearer(token), "Origin": origin})
        too_large = await client.put(
            "/api/auth/me", headers=bearer(token), content=b"{" + b" " * 2_000_000 + b"}"
        )
        metrics = (await client.get("/metrics")).text
    assert me.status_code == 200
    assert me.headers["x-request-id"]  # written by identity's own stack
    assert me.headers["access-control-allow-origin"] == origin
    assert too_large.status_code == 413
    counted = {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "taskhub_http_requests_total"
    }
    assert counted[("GET", "/api/{path:path}", "200")] == 1
    assert counted[("PUT", "/api/{path:path}", "413")] == 1


async def test_the_rate_limit_holds_and_its_refusal_is_the_gateway_s(
    make_gateway, client_for
) -> None:
    async with (
        make_gateway(RATE_LIMIT_DEFAULT="3/minute") as app,
        client_for(InProcessPassThrough(app)) as client,
    ):
        token = await token_for(client)
        statuses = [
            (await client.get("/api/auth/me", headers=bearer(token))).status_code for _ in range(4)
        ]
        limited = await client.get("/api/auth/me", headers=bearer(token))
    assert statuses == [200, 200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0


async def test_the_composed_view_is_the_gateway_s_answer_under_its_request_context(
    make_gateway, client_for, in_process_task_parts, access_lines
) -> None:
    origin = "https://app.example.com"
    async with (
        make_gateway(in_process_task_parts, CORS_ORIGINS=origin) as app,
        client_for(InProcessPassThrough(app)) as client,
    ):
        token = await token_for(client)
        composed = await client.get(
            "/api/tasks/7",
            headers={**bearer(token), "X-Request-ID": "composed-1", "Origin": origin},
        )
        missing = await client.get("/api/tasks/missing", headers=bearer(token))
    assert composed.status_code == 200
    assert composed.json()["comments"] == [{"id": "comments-1", "task_id": "7"}]
    assert composed.json()["files"] == [{"id": "files-1", "task_id": "7"}]
    assert composed.headers["x-request-id"] == "composed-1"
    assert composed.headers["access-control-allow-origin"] == origin
    assert missing.status_code == 404
    lines = [line.getMessage() for line in access_lines if "/api/tasks/" in line.getMessage()]
    assert lines == ["GET /api/tasks/7 200", "GET /api/tasks/missing 404"]
