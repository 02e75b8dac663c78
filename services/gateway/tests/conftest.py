import contextlib
import random
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from identity.app import create_app as create_identity
from identity.settings import IdentitySettings
from taskhub_common.http import register_local_app
from taskhub_common.testing import REDIS_HOST, database_env, recreate_database

DATABASE = "taskhub_test_gateway"
IDENTITY_URL = "http://identity.gateway-test"


@pytest.fixture(scope="session")
async def identity() -> AsyncIterator[FastAPI]:
    """The real identity service, in-process: the gateway verifies its tokens."""
    await recreate_database(DATABASE)
    app = create_identity(IdentitySettings(**database_env(DATABASE), ENVIRONMENT="test"))
    register_local_app(IDENTITY_URL, app)
    async with app.router.lifespan_context(app):
        yield app


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def make_gateway(identity: FastAPI) -> GatewayFactory:
    """A started gateway with settings overridden for one test."""

    @contextlib.asynccontextmanager
    async def started(extra_upstreams=(), **overrides) -> AsyncIterator[FastAPI]:
        settings = GatewaySettings(
            IDENTITY_URL=IDENTITY_URL,
            REDIS_HOST=REDIS_HOST,
            TRUSTED_PROXIES="127.0.0.1",
            ENVIRONMENT="test",
            **overrides,
        )
        app = create_gateway(settings)
        # A test's upstreams come first and replace the defaults of the same name.
        names = {upstream.name for upstream in extra_upstreams}
        defaults = [upstream for upstream in app.state.upstreams if upstream.name not in names]
        app.state.upstreams = [*extra_upstreams, *defaults]
        async with app.router.lifespan_context(app):
            yield app

    return started


def random_ip() -> str:
    """A client address of its own per test, so rate-limit counters never collide."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture
def client_for() -> Callable[[FastAPI], httpx.AsyncClient]:
    def client(app: FastAPI, ip: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 40000)),
            base_url="http://gateway",
            headers={"X-Forwarded-For": ip or random_ip()},
        )

    return client
