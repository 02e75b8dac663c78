"""The API gateway: the only public entry of TaskHub."""

import asyncio
import contextlib
import ipaddress
import math
import time
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.responses import Response

from gateway.clients import ip_key, rate_limit_key
from gateway.compose import TASK_VIEW, compose_task
from gateway.openapi import MergedOpenAPI
from gateway.proxy import forward
from gateway.settings import GatewaySettings
from gateway.upstreams import find_upstream, is_public, upstreams
from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.auth import Principal, TokenVerifier
from taskhub_common.errors import NotAuthenticated, NotFound, error_response
from taskhub_common.http import make_http_client

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def verified_principal(request: Request) -> Principal | None:
    """The caller, if the request carries a valid access token. Never raises: the decision to
    refuse comes after the rate limit, so anonymous floods are limited too."""
    request.state.principal = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        verifier: TokenVerifier = request.app.state.token_verifier
        with contextlib.suppress(NotAuthenticated):
            request.state.principal = await verifier.verify(token)
    return request.state.principal


async def proxy_to_owner(request: Request) -> Response:
    path = public_path(request.url.path)
    upstream = find_upstream(request.app.state.upstreams, path) if path else None
    if upstream is None:
        raise NotFound("Not Found")
    if request.state.principal is None and not is_public(request.method, path):
        raise NotAuthenticated()
    if request.method == "GET" and TASK_VIEW.fullmatch(path):
        return await compose_task(request, path)
    return await forward(request, upstream, path)


def public_path(path: str) -> str | None:
    """The path as routed, or None for one that must not be: a `.` or `..` segment (the
    upstream URL would resolve it, e.g. /api/auth/../../internal/x) or a control character.
    The path arrives percent-decoded, so encoded forms are caught too. A trailing slash is
    dropped: the seed's SPA calls `/api/tasks/` where the services route `/api/tasks`."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in path):
        return None
    segments = path.split("/")
    if any(segment in (".", "..") for segment in segments):
        return None
    return path.rstrip("/") or "/"


def build_router(settings: GatewaySettings, limiter: Limiter) -> APIRouter:
    router = APIRouter(dependencies=[Depends(verified_principal)])

    @router.get("/api/health", tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        """Name, version and the readiness of every service."""
        clients: dict[str, httpx.AsyncClient] = request.app.state.upstream_clients
        names = list(clients)
        checks = await asyncio.gather(*(_readiness(clients[name]) for name in names))
        services = dict(zip(names, checks, strict=True))
        healthy = all(check["status"] == "ok" for check in services.values())
        return {
            "name": settings.APP_NAME,
            "version": settings.APP_VERSION,
            "status": "ok" if healthy else "degraded",
            "services": services,
        }

    # Login and register share one budget per IP: guessing passwords and mass sign-ups alike.
    auth_limit = limiter.shared_limit(settings.RATE_LIMIT_AUTH, scope="auth", key_func=ip_key)

    @router.post("/api/auth/login", include_in_schema=False)
    @auth_limit
    async def login(request: Request) -> Response:
        return await proxy_to_owner(request)

    @router.post("/api/auth/register", include_in_schema=False)
    @auth_limit
    async def register(request: Request) -> Response:
        return await proxy_to_owner(request)

    @router.api_route("/api/{path:path}", methods=PROXY_METHODS, include_in_schema=False)
    @router.api_route("/.well-known/jwks.json", methods=["GET"], include_in_schema=False)
    @limiter.limit(settings.RATE_LIMIT_DEFAULT, key_func=rate_limit_key)
    async def proxy(request: Request) -> Response:
        return await proxy_to_owner(request)

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        own = request.app.openapi().get("paths", {})
        merged: MergedOpenAPI = request.app.state.merged_openapi
        return JSONResponse(await merged.document(request.app.state.upstream_clients, own))

    @router.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{settings.APP_NAME} API")

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{settings.APP_NAME} API")

    return router


async def _readiness(client: httpx.AsyncClient) -> dict[str, Any]:
    try:
        response = await client.get("/health/ready", timeout=2.0)
    except httpx.HTTPError:
        return {"status": "down"}
    body = response.json() if response.headers.get("content-type") == "application/json" else {}
    return {"status": "ok" if response.status_code == 200 else "unavailable", **body}


def seconds_until_reset(limiter: Limiter, request: Request) -> int:
    limit, key = request.state.view_rate_limit
    try:
        reset_at, _ = limiter.limiter.get_window_stats(limit, *key)
    except Exception:
        return limit.get_expiry()  # storage unreachable: a whole window is a safe answer
    return max(1, math.ceil(reset_at - time.time()))


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    table = upstreams(settings)
    limiter = Limiter(
        key_func=rate_limit_key,
        storage_uri=settings.redis_url or "memory://",
        # slowapi's Redis client is synchronous: keep a dead Redis from stalling the loop.
        storage_options={"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        key_style="endpoint",
        # Redis down: count in memory rather than refuse or fail every request.
        in_memory_fallback_enabled=True,
    )

    async def open_upstreams(app: FastAPI) -> None:
        timeout = httpx.Timeout(
            settings.UPSTREAM_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT
        )
        app.state.upstream_clients = {
            upstream.name: make_http_client(upstream.base_url, timeout=timeout)
            for upstream in app.state.upstreams
        }

    async def close_upstreams(app: FastAPI) -> None:
        for client in app.state.upstream_clients.values():
            await client.aclose()

    app = create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[build_router(settings, limiter)],
            description="The public entry of TaskHub.",
            on_startup=[open_upstreams],
            on_shutdown=[close_upstreams],
            openapi_docs=False,
        )
    )
    app.state.upstreams = table
    app.state.limiter = limiter
    app.state.trusted_networks = [
        ipaddress.ip_network(network, strict=False) for network in settings.trusted_proxies
    ]
    app.state.merged_openapi = MergedOpenAPI(settings.APP_NAME, settings.APP_VERSION, table)

    @app.exception_handler(RateLimitExceeded)
    async def rate_limited(request: Request, exc: RateLimitExceeded) -> Response:
        return error_response(
            429,
            f"Rate limit exceeded: {exc.detail}",
            headers={"Retry-After": str(seconds_until_reset(limiter, request))},
        )

    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        # Tokens travel in headers, not cookies; credentials with a wildcard would let any
        # site read responses.
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "Retry-After", "X-Total-Count", "X-Missing-Parts"],
    )
    return app
