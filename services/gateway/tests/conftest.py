import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.app import use_upstreams
from gateway.settings import GatewaySettings
from taskhub_common.testing import REDIS_HOST
from taskhub_common.testing.suite import Suite

SUITE = Suite("gateway")
# The real identity service runs in-process beside the gateway, which verifies its tokens.
_shared = SUITE.shared_fixtures()
identity_app, identity = _shared.identity_app, _shared.identity


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def make_gateway(identity_app: FastAPI) -> GatewayFactory:
    """A started gateway with settings overridden for one test."""

    @contextlib.asynccontextmanager
    async def started(extra_upstreams=(), **overrides) -> AsyncIterator[FastAPI]:
        settings = GatewaySettings(
            **{
                "IDENTITY_URL": SUITE.identity_url,
                "REDIS_HOST": REDIS_HOST,
                "TRUSTED_PROXIES": "127.0.0.1",
                "ENVIRONMENT": "test",
                # Its own namespace for the composed view's part caches (in the shared Redis).
                "DB_NAME": f"gateway_test_{uuid.uuid4().hex[:12]}",
                **overrides,
            }
        )
        app = create_gateway(settings)
        # A test's upstreams come first and replace the defaults of the same name.
        names = {upstream.name for upstream in extra_upstreams}
        defaults = [upstream for upstream in app.state.upstreams if upstream.name not in names]
        use_upstreams(app, [*extra_upstreams, *defaults])
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
