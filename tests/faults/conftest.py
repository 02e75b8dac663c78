"""A distributed stack whose services reach RabbitMQ and PostgreSQL through proxies the tests
cut and restore (tests/e2e/stack.py's Stack, one uvicorn process per service)."""

from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from taskhub_common.testing import PG_PORT, RABBITMQ_URL, TcpProxy, recreate_database
from tests.e2e.stack import Stack


@pytest.fixture(scope="session")
def broker_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(urlsplit(RABBITMQ_URL).port or 5672)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def database_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(PG_PORT)
    proxy.start()
    yield proxy
    proxy.stop()


def through(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
async def stack(
    tmp_path_factory, broker_proxy: TcpProxy, database_proxy: TcpProxy
) -> AsyncIterator[Stack]:
    running = Stack(
        "distributed",
        tmp_path_factory.mktemp("faults"),
        database="taskhub_faults",
        # Seven processes importing and migrating at once on two loaded cores took over 3 min.
        start_timeout=300,
        extra_env={
            "ENVIRONMENT": "test",
            "DB_PORT": str(database_proxy.port),
            "RABBITMQ_URL": through(broker_proxy, RABBITMQ_URL),
            # The bursts are one user's: the gateway's per-user budget is not under test here.
            "RATE_LIMIT_DEFAULT": "100000/minute",
            # Six processes' pools within PostgreSQL's default 100 connections, with room left
            # for the tests' own and a service's pool that a kill leaves open until it times out.
            "DB_POOL_SIZE": "5",
            "DB_MAX_OVERFLOW": "5",
        },
    )
    await recreate_database(running.database)
    running.start()
    yield running
    assert running.stop() == [0] * len(running.processes), "a process did not stop cleanly"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    """The stack's database, straight (not through the proxy the tests cut)."""
    connection = await asyncpg.connect(**stack.database_address())
    yield connection
    await connection.close()
