"""HTTP clients between services.

In the distributed mode a client talks to a URL; in the embedded mode the runner registers each
service's ASGI app under its URL and the client reaches it through httpx's ASGI transport, so the
calling code is the same in both modes.
"""

from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from starlette.types import ASGIApp

from taskhub_common.tracing import trace_client

_local_apps: dict[str, ASGIApp] = {}


def register_local_app(base_url: str, app: ASGIApp) -> None:
    _local_apps[base_url.rstrip("/")] = app


def local_app(base_url: str) -> ASGIApp | None:
    """The app registered under `base_url`, if this process runs it (the embedded mode)."""
    return _local_apps.get(base_url.rstrip("/"))


def no_cookies() -> CookieJar:
    """A jar that accepts nothing: a shared client must not replay one user's cookies to another.
    (A CookieJar, not httpx.Cookies: the client copies the latter into a default jar.)"""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def make_http_client(
    base_url: str, timeout: httpx.Timeout | float = 10.0, max_connections: int = 100
) -> httpx.AsyncClient:
    base_url = base_url.rstrip("/")
    app = local_app(base_url)
    if app is not None:
        transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
    else:
        transport = httpx.AsyncHTTPTransport(
            # Idle connections are dropped before uvicorn's 5 s keep-alive closes them: a
            # request sent on a connection the server is closing fails with a ReadError.
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=20,
                keepalive_expiry=2.0,
            ),
            retries=1,
        )
    client = httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=timeout, cookies=no_cookies()
    )
    # Client spans, and the current trace's traceparent on every call.
    trace_client(client)
    return client
