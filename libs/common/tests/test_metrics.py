"""/metrics: request counts and latency by route template, the outbox computed on scrape."""

import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, insert, text

from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.db import Database
from taskhub_common.metrics import ServiceMetrics
from taskhub_common.outbox import outbox
from taskhub_common.settings import ServiceSettings
from taskhub_common.testing import PG_HOST, PG_USER, asgi_client


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a text exposition by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(404, "no such item")
        return {"id": item_id}

    application = create_service_app(
        ServiceSpec(settings=ServiceSettings(SERVICE_NAME="metered"), routers=[router])
    )
    async with application.router.lifespan_context(application):
        yield application


async def test_requests_are_counted_and_timed_by_route_template_and_status(app: FastAPI) -> None:
    async with asgi_client(app, "http://metered") as client:
        for path in ("/items/1", "/items/2", "/items/0", "/items/x", "/no/such/path", "/wp-login"):
            await client.get(path)
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)
    requests = "taskhub_http_requests_total"
    route = "/items/{item_id}"
    assert value(found, requests, method="GET", route=route, status="200") == 2
    assert value(found, requests, method="GET", route=route, status="404") == 1
    assert value(found, requests, method="GET", route=route, status="422") == 1
    # Paths no route took share one series, whatever they were.
    assert value(found, requests, method="GET", route="unmatched", status="404") == 2
    timed = "taskhub_http_request_duration_seconds_count"
    assert value(found, timed, method="GET", route=route) == 4
    # No database: no outbox to measure, and no request to /items/ leaked its raw path.
    assert value(found, "taskhub_outbox_backlog") == 0
    assert not any("/items/1" in dict(labels).get("route", "") for _, labels in found)


async def test_methods_outside_http_s_usual_ones_share_one_series(app: FastAPI) -> None:
    async with asgi_client(app, "http://metered") as client:
        for method in ("BREW", "PROPFIND", "X" * 40):
            await client.request(method, "/items/1")
        await client.delete("/items/1")
        found = samples((await client.get("/metrics")).text)
    requests = "taskhub_http_requests_total"
    route = "/items/{item_id}"
    assert value(found, requests, method="other", route=route, status="405") == 3
    assert value(found, requests, method="DELETE", route=route, status="405") == 1
    assert {dict(labels).get("method") for _, labels in found} <= {None, "GET", "DELETE", "other"}


async def test_the_outbox_backlog_and_oldest_age_are_computed_on_scrape(
    database: Database,
) -> None:
    metrics = ServiceMetrics()
    await metrics.observe_outbox(database)
    before = value(samples(metrics.render().decode()), "taskhub_outbox_backlog")
    ids = [uuid.uuid4() for _ in range(3)]
    async with database.engine.begin() as connection:
        for index, row_id in enumerate(ids):
            await connection.execute(
                insert(outbox).values(
                    id=row_id,
                    routing_key="metrics.test",
                    payload={},
                    created_at=text("now() - interval '1 hour'"),
                    # The first is sent already: it is no backlog.
                    sent_at=text("now()") if index == 0 else None,
                )
            )
    try:
        await metrics.observe_outbox(database)
        found = samples(metrics.render().decode())
    finally:
        async with database.engine.begin() as connection:
            await connection.execute(delete(outbox).where(outbox.c.id.in_(ids)))
    assert value(found, "taskhub_outbox_backlog") == before + 2
    assert 3600 <= value(found, "taskhub_outbox_oldest_unsent_age_seconds") < 3600 + 300


async def test_the_outbox_is_nan_when_the_database_does_not_answer() -> None:
    # Port 1: nothing listens there, the connection is refused.
    unreachable = Database(
        ServiceSettings(SERVICE_NAME="metered", DB_HOST=PG_HOST, DB_PORT=1, DB_USER=PG_USER)
    )
    metrics = ServiceMetrics()
    try:
        await metrics.observe_outbox(unreachable)
    finally:
        await unreachable.dispose()
    found = samples(metrics.render().decode())
    assert value(found, "taskhub_outbox_backlog") != value(found, "taskhub_outbox_backlog")


def test_every_event_outcome_is_a_series_from_the_start() -> None:
    found = samples(ServiceMetrics().render().decode())
    for outcome in ("handled", "retried", "dead_lettered", "dropped"):
        assert value(found, "taskhub_events_total", outcome=outcome) == 0
