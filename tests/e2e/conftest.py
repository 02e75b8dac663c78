"""The end-to-end suite runs once per mode, against real processes over real HTTP."""

import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from taskhub_common.testing import recreate_database
from tests.e2e.stack import Stack


@pytest.fixture(scope="session", params=["embedded", "distributed"])
async def stack(request, tmp_path_factory) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp(request.param)
    # The gateway believes X-Forwarded-For from 127.0.0.1: each test is a client of its own.
    running = Stack(
        request.param, workdir, extra_env={"ENVIRONMENT": "test", "TRUSTED_PROXIES": "127.0.0.1"}
    )
    if request.param == "distributed":
        await recreate_database(running.database)
    running.start()
    yield running
    assert running.stop() == [0] * len(running.processes), "a process did not stop cleanly"


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
