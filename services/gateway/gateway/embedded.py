"""The embedded mode: every service in one process, behind the gateway, on the embedded
PostgreSQL and the in-process bus. `python -m gateway.embedded` (what `make run` starts).

Each service app is registered under its URL, so the gateway calls it in-process and any
service calling another reaches it through httpx's ASGI transport: the same proxy code as in
the distributed mode. A request the gateway passes through goes to its service's app past the
gateway's own middleware stack (gateway.in_process, decision 0092).
"""

import contextlib
import importlib
import logging
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from gateway.in_process import InProcessPassThrough
from gateway.settings import GatewaySettings
from gateway.upstreams import upstreams
from taskhub_common import embedded_postgres
from taskhub_common.http import register_local_app
from taskhub_common.local_bus import shared_bus

logger = logging.getLogger("taskhub")


def address() -> tuple[str, int]:
    """Where `make run` listens: HOST and PORT, else 127.0.0.1:8000."""
    return os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))


def banner(host: str, port: int) -> str:
    """What a newcomer needs once everything has started: where to go."""
    # 0.0.0.0 and :: listen everywhere, but a browser wants an address.
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    base = f"http://{shown}:{port}"
    return "\n".join(
        [
            "TaskHub is ready (embedded mode; Ctrl-C stops it)",
            f"  API     {base}/api",
            f"  Docs    {base}/docs  (ReDoc: {base}/redoc)",
            f"  Health  {base}/api/health",
        ]
    )


def create_embedded_app() -> InProcessPassThrough:
    settings = GatewaySettings()
    services = []
    for upstream in upstreams(settings):
        module_name, factory_name = upstream.app_factory.split(":")
        service_app = getattr(importlib.import_module(module_name), factory_name)()
        register_local_app(upstream.base_url, service_app)
        services.append(service_app)
    gateway = create_gateway(settings)
    gateway_lifespan = gateway.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # ASGI transports run no lifespan: start every service here, before the gateway. No
        # relay publishes until every service has subscribed (a backlog left by a crash would
        # otherwise reach only the services that happened to start first).
        shared_bus.hold()
        async with contextlib.AsyncExitStack() as stack:
            try:
                for service_app in services:
                    await stack.enter_async_context(
                        service_app.router.lifespan_context(service_app)
                    )
                await stack.enter_async_context(gateway_lifespan(app))
            finally:
                shared_bus.release()
            logger.info(banner(*address()))
            yield

    gateway.router.lifespan_context = lifespan
    return InProcessPassThrough(gateway)


def main() -> None:
    try:
        _serve()
    finally:
        embedded_postgres.stop_all()


def _serve() -> None:
    host, port = address()
    uvicorn.run(
        create_embedded_app(),
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # the request-context middleware logs each request once
        proxy_headers=False,  # X-Forwarded-* are the gateway's to judge, by TRUSTED_PROXIES
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
