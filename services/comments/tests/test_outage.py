"""The database taken away from the comments service: every route answers 503 with the error
body and a Retry-After (it was a 500, `internal`), readiness says so, and it recovers."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from comments.app import create_app
from taskhub_common.testing import PG_HOST, PG_PORT, RABBITMQ_URL, TcpProxy

from .conftest import comments_settings, comments_url, post_comment


@pytest.fixture
async def database_proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(PG_PORT, PG_HOST)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def cut_off_client(
    app: FastAPI, database_proxy: TcpProxy
) -> AsyncIterator[httpx.AsyncClient]:
    """A second comments app, on the same database but through the proxy. (It needs the
    session's app for the users and tasks its tests use.) On RabbitMQ: on the shared in-process
    bus, its subscription would take the session app's events."""
    application = create_app(
        comments_settings(DB_PORT=database_proxy.port, RABBITMQ_URL=RABBITMQ_URL)
    )
    async with application.router.lifespan_context(application):
        await asyncio.wait_for(application.state.bus.wait_connected(), timeout=15)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://comments") as client:
            yield client


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "unavailable"
    assert body["request_id"] == response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) > 0


async def test_a_database_outage_is_503_with_retry_after(
    cut_off_client: httpx.AsyncClient, database_proxy: TcpProxy, client, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"], "before the outage")
    listed = await cut_off_client.get(comments_url(task["id"]), headers=alice[1])
    assert listed.status_code == 200

    database_proxy.stop()
    one = comments_url(task["id"], comment["id"])
    responses = [
        await cut_off_client.get(comments_url(task["id"]), headers=alice[1]),
        await cut_off_client.post(
            comments_url(task["id"]), headers=alice[1], json={"content": "during"}
        ),
        await cut_off_client.put(one, headers=alice[1], json={"content": "edited"}),
        await cut_off_client.delete(one, headers=alice[1]),
    ]
    for response in responses:
        assert_unavailable(response)
    ready = await cut_off_client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "down"

    database_proxy.start()
    again = await cut_off_client.get(comments_url(task["id"]), headers=alice[1])
    assert again.status_code == 200
    assert [c["content"] for c in again.json()] == ["before the outage"]
    assert (await cut_off_client.get("/health/ready")).status_code == 200
