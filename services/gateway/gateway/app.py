"""The API gateway: the only public entry of TaskHub."""

import asyncio
import ipaddress
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from limits import RateLimitItem, parse
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from gateway.clients import ip_key, rate_limit_key
from gateway.compose import TASK_VIEW, compose_task, part_caches
from gateway.consumers import BATCH_EVENT_HANDLERS
from gateway.cors import Cors, cors_options
from gateway.live import LiveUpdates, keep_log
from gateway.openapi import MergedOpenAPI
from gateway.proxy import forward
from gateway.rate_limits import RateLimiter, rate_limit
from gateway.settings import GatewaySettings
from gateway.sockets import ServerSend, redact_socket_credentials
from gateway.sockets import router as socket_router
from gateway.tickets import ticket_router
from gateway.upstream_client import UpstreamClient, UpstreamError, get_json, make_upstream_client
from gateway.upstreams import Owner, Upstream, is_public, owner_lookup, upstreams
from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.auth import Principal, TokenVerifier
from taskhub_common.docs import docs_router
from taskhub_common.errors import NotAuthenticated, NotFound


async def verified_principal(request: Request) -> Principal | None:
    """The caller, if the request carries a valid access token. Never raises: the decision to
    refuse comes after the rate limit, so anonymous floods are limited too."""
    return await _principal(request, ask_deny_list=True)


async def _principal(request: Request, ask_deny_list: bool) -> Principal | None:
    principal = None
    if token := bearer_token(request.scope["headers"]):
        verifier: TokenVerifier = request.app.state.token_verifier
        try:
            principal = await verifier.verify(token, ask_deny_list=ask_deny_list)
        except NotAuthenticated:
            principal = None  # a bad token: refused, if at all, as an anonymous caller
    request.state.principal = principal
    return principal


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the first Authorization header, if it is a bearer one. Read from the raw
    headers: every request passes here, and a header object would be built for this alone."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token if scheme.lower() == "bearer" else None
    return None


class PassThroughRoute(Route):
    """`/api/{path:path}`: every public path a service owns, forwarded to it. A bare ASGI route
    placed ahead of FastAPI's router (decision 0046): it is most of the gateway's traffic, and
    the router's matching, dependency solving and response wrapping cost as much CPU as the
    forwarding itself. The work is the same as a FastAPI route's would be: the caller from the
    token, the rate limit, then `proxy_to_owner`; errors are raised to the app's handlers.

    The token's signature and expiry are checked here for the rate-limit key and to refuse
    anonymous callers early; whether it was revoked is for the owning service to ask, which
    verifies the token itself and decides (decision 0046). The gateway's own routes under
    `/api` (health, login, register, the WebSocket ticket) are left to the router."""

    def __init__(self, limit: RateLimitItem, reserved: set[str]) -> None:
        super().__init__("/api/{path:path}", self.serve, include_in_schema=False)
        # Route treats a method as a request -> response endpoint, and adds HEAD to a GET.
        self.app = self.serve
        # Every method: which ones a path takes is for its service to say (a 405 and `Allow`).
        self.methods = None
        self.limit = limit
        # The paths of the gateway's own routes: these go on to the router, whatever the method.
        self.reserved = frozenset(reserved)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            return Match.NONE, {}
        if scope["path"] in self.reserved:
            return Match.NONE, {}
        # The route itself, as FastAPI's routes leave it: metrics and traces name its template.
        return Match.FULL, {"endpoint": self.endpoint, "path_params": {}, "route": self}

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await self.identify(request)
        await self.count(request)
        response = await proxy_to_owner(request)
        await response(scope, receive, send)

    async def identify(self, request: Request) -> None:
        """The caller, from the token's signature and expiry (the deny list is the owner's)."""
        await _principal(request, ask_deny_list=False)

    async def count(self, request: Request) -> None:
        """One request against the caller's budget; RateLimited when it is spent."""
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(self.limit, "api", rate_limit_key(request))


def install_pass_through(app: FastAPI, settings: GatewaySettings) -> None:
    """Put the pass-through first among the app's routes, stepping aside for the gateway's own
    routes under `/api`, which must all be fixed paths (a template could not be told apart)."""
    reserved = set()
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if not path.startswith("/api/"):
            continue
        if "{" in path:
            raise RuntimeError(f"{path}: the gateway's own /api routes must be fixed paths")
        reserved.add(path)
    route = PassThroughRoute(parse(settings.RATE_LIMIT_DEFAULT), reserved)
    app.router.routes.insert(0, route)
    app.state.pass_through = route


async def proxy_to_owner(request: Request) -> Response:
    upstream, path = owner(request)
    if is_composed(request.method, path):
        return await compose_task(request, path)
    return await forward(request, upstream, path)


def owner(request: Request) -> Owner:
    """The service that owns the path, and the path as routed; NotFound, or NotAuthenticated
    for an anonymous caller of a path that needs a token."""
    found = request.app.state.find_owner(request.scope["path"])
    if found is None:
        raise NotFound("Not Found")
    if request.state.principal is None and not is_public(request.scope["method"], found.path):
        raise NotAuthenticated()
    return found


def is_composed(method: str, path: str) -> bool:
    """A task read: the gateway composes it from tasks, comments and files."""
    return method == "GET" and TASK_VIEW.fullmatch(path) is not None


def build_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(dependencies=[Depends(verified_principal)])

    @router.get("/api/health", tags=["health"])
    async def health(request: Request) -> dict[str, Any]:
        """Name, version and the readiness of every service."""
        clients: dict[str, UpstreamClient] = request.app.state.upstream_clients
        names = list(clients)
        checks = await asyncio.gather(*(_readiness(clients[name]) for name in names))
        services = dict(zip(names, checks, strict=True))
        live = request.app.state.live.status(request.app)
        healthy = all(check["status"] == "ok" for check in services.values())
        return {
            "name": settings.APP_NAME,
            "version": settings.APP_VERSION,
            "status": "ok" if healthy and live["events"] == "ok" else "degraded",
            "services": services,
            "live": live,
        }

    # Login and register share one budget per IP: guessing passwords and mass sign-ups alike.
    # (Route dependencies run after the router's, so the principal is known by then.)
    auth_limit = [Depends(rate_limit(settings.RATE_LIMIT_AUTH, scope="auth", key=ip_key))]
    default_limit = [
        Depends(rate_limit(settings.RATE_LIMIT_DEFAULT, scope="api", key=rate_limit_key))
    ]

    @router.post("/api/auth/login", include_in_schema=False, dependencies=auth_limit)
    async def login(request: Request) -> Response:
        return await proxy_to_owner(request)

    @router.post("/api/auth/register", include_in_schema=False, dependencies=auth_limit)
    async def register(request: Request) -> Response:
        return await proxy_to_owner(request)

    # Every other /api path is PassThroughRoute's, ahead of this router.
    @router.api_route(
        "/.well-known/jwks.json",
        methods=["GET"],
        include_in_schema=False,
        dependencies=default_limit,
    )
    async def jwks(request: Request) -> Response:
        return await proxy_to_owner(request)

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        own = request.app.openapi()
        merged: MergedOpenAPI = request.app.state.merged_openapi
        return JSONResponse(await merged.document(request.app.state.upstream_clients, own))

    router.include_router(docs_router(f"{settings.APP_NAME} API"))
    return router


async def _readiness(client: UpstreamClient) -> dict[str, Any]:
    try:
        status, body = await get_json(client, "/health/ready", within=2.0)
    except UpstreamError:
        return {"status": "down"}
    return {"status": "ok" if status == 200 else "unavailable", **(body or {})}


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    table = upstreams(settings)

    async def open_upstreams(app: FastAPI) -> None:
        app.state.upstream_clients = {
            upstream.name: make_upstream_client(
                upstream.base_url, settings.UPSTREAM_TIMEOUT, settings.UPSTREAM_CONNECT_TIMEOUT
            )
            for upstream in app.state.upstreams
        }
        app.state.task_part_caches = part_caches(settings)

    async def close_upstreams(app: FastAPI) -> None:
        for client in app.state.upstream_clients.values():
            await client.aclose()
        # The parts share one store (part_caches).
        caches = app.state.task_part_caches.values()
        for store in {id(cache.store): cache.store for cache in caches}.values():
            await store.close()

    live = LiveUpdates(settings)
    app = create_service_app(
        ServiceSpec(
            settings=settings,
            # Before the catch-all proxy route of build_router.
            routers=[
                ticket_router(settings.RATE_LIMIT_DEFAULT),
                socket_router,
                build_router(settings),
            ],
            description="The public entry of TaskHub.",
            # Live updates: every replica receives every event on a queue of its own.
            batch_event_handlers=BATCH_EVENT_HANDLERS,
            on_startup=[open_upstreams],
            on_shutdown=[live.shutdown, close_upstreams],
            background=[keep_log],
            openapi_docs=False,
        )
    )
    app.state.live = live
    redact_socket_credentials()
    use_upstreams(app, table)
    app.state.rate_limiter = RateLimiter(settings.redis_url)
    app.state.trusted_networks = [
        ipaddress.ip_network(network, strict=False) for network in settings.trusted_proxies
    ]
    app.state.merged_openapi = MergedOpenAPI(settings.APP_NAME, settings.APP_VERSION, table)
    install_pass_through(app, settings)

    app.add_middleware(Cors, **cors_options(settings))
    # Last added, so outermost: the live hub writes frames to uvicorn's connection directly.
    app.add_middleware(ServerSend)
    return app


def use_upstreams(app: FastAPI, table: list[Upstream]) -> None:
    """The routing table, with its lookup (which remembers its answers)."""
    app.state.upstreams = table
    app.state.find_owner = owner_lookup(table)
