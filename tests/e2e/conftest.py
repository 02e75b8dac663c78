"""The end-to-end suite runs once per mode, against real processes over real HTTP; or, with
E2E_COMPOSE_URL set (deploy/compose-test.sh), once against the compose stack's gateway
container at that address (mode "compose")."""

import contextlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from moto.server import ThreadedMotoServer

from taskhub_common.testing import TcpProxy, recreate_database
from tests.e2e.accounts import E2E_REFRESH_GRACE_SECONDS
from tests.e2e.stack import Stack, free_port

COMPOSE_URL = os.environ.get("E2E_COMPOSE_URL", "")
E2E = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The suite's timeout is for a test's own work: the stacks its fixtures start have their
    own bound (Stack.start_timeout), which a loaded machine may need whole. Against the compose
    stack, only the tests of the running stack: the others start processes of their own on
    this machine."""
    for item in items:
        if item.path.is_relative_to(E2E) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(func_only=True))
    if not COMPOSE_URL:
        return
    kept = [item for item in items if "stack" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept


@pytest.fixture(scope="session")
def tasks_redis() -> Iterator[TcpProxy]:
    """The tasks service reaches Redis through this proxy, so a test can take Redis away from
    it without stopping the server the rest of the suite uses."""
    proxy = TcpProxy(6379)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API (moto's server) for the files service of the distributed mode."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._port}"
    server.stop()


@pytest.fixture(scope="session", params=["compose"] if COMPOSE_URL else ["embedded", "distributed"])
async def stack(
    request, tmp_path_factory, tasks_redis: TcpProxy, s3_server: str
) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(request.param)
    if request.param == "compose":
        # Started, and stopped, by deploy/compose-test.sh, with the settings the stacks below
        # get (deploy/ci/docker-compose.ci.yml).
        yield Stack("compose", workdir, base_url=COMPOSE_URL)
        return
    # The gateway believes X-Forwarded-For from 127.0.0.1: each test is a client of its own.
    running = Stack(
        request.param,
        workdir,
        extra_env={
            "ENVIRONMENT": "test",
            "TRUSTED_PROXIES": "127.0.0.1",
            "REFRESH_GRACE_SECONDS": str(E2E_REFRESH_GRACE_SECONDS),
            # Tests that wait for an event's effect poll ten times a second, a few requests a
            # time: the default 100 a minute would refuse a slow machine's waits.
            "RATE_LIMIT_DEFAULT": "6000/minute",
            # Small pools: this stack stays up while tests/faults runs a second one, and both
            # must fit in PostgreSQL's default 100 connections.
            "DB_POOL_SIZE": "3",
            "DB_MAX_OVERFLOW": "4",
        },
        service_env={
            "tasks": {"REDIS_PORT": str(tasks_redis.port)},
            # The embedded mode keeps files under DATA_DIR; the distributed one in S3.
            "files": {
                "AWS_BUCKET": "taskhub-e2e",
                "AWS_ACCESS_KEY_ID": "e2e",
                "AWS_SECRET_ACCESS_KEY": "e2e",
                "AWS_REGION": "us-east-1",
                "CUSTOM_S3_ENDPOINT_URL": s3_server,
            },
        },
    )
    if request.param == "distributed":
        await recreate_database(running.database)
    running.start()
    yield running
    assert running.stop() == [0] * len(running.processes), "a process did not stop cleanly"


@pytest.fixture
def redis_outage(stack: Stack, tasks_redis: TcpProxy):
    """Take Redis away from the tasks service for the duration of a `with` block. (The
    embedded mode has no Redis: its cache lives in the process.)"""

    if stack.mode == "compose":
        pytest.skip("the compose stack's Redis is inside its network, out of the tests' reach")

    @contextlib.contextmanager
    def outage() -> Iterator[None]:
        tasks_redis.stop()
        try:
            yield
        finally:
            tasks_redis.start()

    return outage


@pytest.fixture
def client_ip() -> str:
    """Each test is a client of its own (the gateway trusts X-Forwarded-For from 127.0.0.1),
    so per-IP rate limits never leak from one test into another."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
async def api(stack: Stack, client_ip: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"X-Forwarded-For": client_ip}, timeout=30
    ) as client:
        yield client
