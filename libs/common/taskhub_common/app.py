"""The one app factory every service uses."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from taskhub_common.auth import JwksKeySource, KeySource, TokenVerifier
from taskhub_common.bus import make_bus
from taskhub_common.cache import task_part_cache
from taskhub_common.consumer import BatchEventHandler, EventConsumer, EventHandler
from taskhub_common.db import Database
from taskhub_common.docs import docs_router
from taskhub_common.errors import install_error_handlers
from taskhub_common.http import make_http_client
from taskhub_common.limits import RequestLimitsMiddleware
from taskhub_common.logs import configure_logging, service_var
from taskhub_common.metrics import MetricsMiddleware, ServiceMetrics, metrics_router
from taskhub_common.middleware import RequestContextMiddleware
from taskhub_common.outbox import OutboxRelay
from taskhub_common.revocation import make_deny_list
from taskhub_common.settings import ServiceSettings
from taskhub_common.tasks_client import TasksClient
from taskhub_common.tracing import trace_app
from taskhub_common.users import RecentCallers

logger = logging.getLogger(__name__)

Hook = Callable[[FastAPI], Awaitable[None]]
# A loop a service runs for as long as it is up (the notifier's clock, a mail sender).
BackgroundLoop = Callable[[FastAPI], Awaitable[None]]

SHUTDOWN_GRACE_SECONDS = 5


@dataclass
class ServiceSpec:
    """What makes one service: its settings, routes, migrations, event handlers and loops."""

    settings: ServiceSettings
    routers: list[APIRouter]
    description: str = ""
    # None for a service without a database (the gateway).
    migrations_dir: Path | None = None
    # Event type -> handler. Without a database, the service still receives the events, on a
    # queue of its own process (no inbox, no retries: see EventConsumer).
    event_handlers: dict[str, EventHandler] = field(default_factory=dict)
    # Event type -> a handler of many such events at once (in place of one in event_handlers).
    batch_event_handlers: dict[str, BatchEventHandler] = field(default_factory=dict)
    # Where access-token keys come from; default: identity's JWKS over HTTP.
    key_source: Callable[[FastAPI], KeySource] | None = None
    on_startup: list[Hook] = field(default_factory=list)
    on_shutdown: list[Hook] = field(default_factory=list)
    # Started after the start-up hooks, cancelled at shutdown; each catches its own errors.
    background: list[BackgroundLoop] = field(default_factory=list)
    # The gateway serves a merged document of its own instead.
    openapi_docs: bool = True
    # Services that hang things on tasks ask tasks about them: app.state.tasks_client.
    asks_tasks: bool = False
    # The part of the composed task view this service owns (comments, files): its writes bump
    # app.state.task_parts after they commit, so the gateway's copies go stale (decision 0044).
    task_part: str | None = None


def create_service_app(spec: ServiceSpec) -> FastAPI:
    settings = spec.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.SERVICE_NAME, settings.LOG_LEVEL, settings.LOG_FORMAT)
        # Tasks made from here on (relay, consumers, loops) log under this service's name.
        service_var.set(settings.SERVICE_NAME)
        background: list[asyncio.Task[None]] = []
        app.state.database = None
        bus = make_bus(settings.RABBITMQ_URL)
        app.state.bus = bus
        await bus.start()
        if spec.migrations_dir is not None:
            app.state.database = Database(settings)
            await app.state.database.migrate(spec.migrations_dir)
        subscription = None
        if spec.event_handlers or spec.batch_event_handlers:
            consumer = EventConsumer(
                settings.SERVICE_NAME,
                app.state.database,
                spec.event_handlers,
                app.state,
                spec.batch_event_handlers,
            )
            subscription = await consumer.subscribe(
                bus,
                settings.EVENT_MAX_ATTEMPTS,
                settings.retry_delays_ms,
                on_outcome=app.state.metrics.count_event,
            )
        if app.state.database is not None:
            relay = OutboxRelay(app.state.database, bus, poll_seconds=settings.OUTBOX_POLL_SECONDS)
            background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        identity_client = make_http_client(settings.IDENTITY_URL, timeout=5.0)
        app.state.identity_client = identity_client
        app.state.recent_callers = RecentCallers()
        if spec.asks_tasks:
            # Made here, not at import: in the embedded mode the tasks app is registered by now.
            app.state.tasks_client = TasksClient(
                make_http_client(settings.TASKS_URL, timeout=settings.TASKS_TIMEOUT_SECONDS),
                settings.SECRET_KEY,
            )
        if spec.task_part is not None:
            app.state.task_parts = task_part_cache(
                settings.redis_url, settings.DB_NAME, spec.task_part
            )
        key_source = (
            spec.key_source(app)
            if spec.key_source
            else JwksKeySource(identity_client, ttl=settings.JWKS_CACHE_SECONDS)
        )
        app.state.deny_list = make_deny_list(settings.redis_url)
        app.state.token_verifier = TokenVerifier(
            key_source,
            audience=settings.JWT_AUDIENCE,
            issuer=settings.JWT_ISSUER,
            deny_list=app.state.deny_list,
        )
        for hook in spec.on_startup:
            await hook(app)
        for loop in spec.background:
            background.append(asyncio.create_task(loop(app), name=loop.__name__))
        # What start-up made (modules, routes, models, schemas: some 250,000 objects in the
        # embedded process) lives as long as the process: out of the collector's reach, so that
        # each full collection under load does not walk it all again (decision 0049).
        gc.collect()
        gc.freeze()
        logger.info("%s started", settings.SERVICE_NAME)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            if background:
                # Bounded: a task cancelled in the middle of a broker or database call can take
                # long to unwind, and shutdown must not wait for it.
                await asyncio.wait(background, timeout=SHUTDOWN_GRACE_SECONDS)
            for hook in spec.on_shutdown:
                await hook(app)
            await identity_client.aclose()
            await app.state.deny_list.close()
            if spec.asks_tasks:
                await app.state.tasks_client.client.aclose()
            if spec.task_part is not None:
                await app.state.task_parts.store.close()
            if subscription is not None:
                await bus.unsubscribe(subscription)
            await bus.close()
            if app.state.database is not None:
                await app.state.database.dispose()

    app = FastAPI(
        title=f"{settings.APP_NAME} {settings.SERVICE_NAME}",
        version=settings.APP_VERSION,
        description=spec.description,
        lifespan=lifespan,
        # A redirect would point at the service's own address, which is not public.
        redirect_slashes=False,
        # The docs pages are docs_router's, with their assets served here rather than a CDN.
        docs_url=None,
        redoc_url=None,
        **({} if spec.openapi_docs else {"openapi_url": None}),
        # Traces are tracing.py's (decision 0081). FastAPI's own telemetry would otherwise ask
        # the global OpenTelemetry providers on every request whether it is wanted.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestLimitsMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware, service=settings.SERVICE_NAME)
    app.state.metrics = ServiceMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(health_router())
    app.include_router(metrics_router())
    if spec.openapi_docs:
        app.include_router(docs_router(app.title))
    trace_app(app)
    for router in spec.routers:
        app.include_router(router)
    return app


def health_router() -> APIRouter:
    router = APIRouter(prefix="/health", tags=["health"], include_in_schema=False)

    @router.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """Ready when the database answers and the broker is connected."""
        checks = {"broker": "ok" if request.app.state.bus.is_ready() else "down"}
        database: Database | None = request.app.state.database
        if database is not None:
            try:
                await asyncio.wait_for(database.ping(), timeout=2)
                checks["database"] = "ok"
            except Exception:
                checks["database"] = "down"
        ok = all(state == "ok" for state in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    return router
