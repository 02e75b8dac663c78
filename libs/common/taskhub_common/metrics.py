"""Prometheus metrics of one service app, served on its own `/metrics` (text format).

Each app has its own registry, not the process-wide default one: the embedded mode and the
tests run several apps in one process. The gateway serves its own `/metrics` and routes no
other service's (none is under a public prefix); Prometheus scrapes each service directly.
"""

import asyncio
import logging
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskhub_common.bus import OUTCOMES
from taskhub_common.db import Database
from taskhub_common.outbox import outbox

logger = logging.getLogger(__name__)

# Requests that matched no route share one label, and so do methods outside HTTP's usual
# ones (a client may send any token as a method), so scanners cannot grow the series.
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
OUTBOX_QUERY_SECONDS = 2.0


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "taskhub_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "taskhub_http_request_duration_seconds",
            "Time to answer an HTTP request (until the response started), by route template.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.events = Counter(
            "taskhub_events",
            "Events delivered to this service's handlers, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.events.labels(outcome)
        # The series of each (method, route, status) once looked up: labels() checks and locks
        # on every call, a cost on every request.
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.outbox_backlog = Gauge(
            "taskhub_outbox_backlog",
            "Outbox rows not yet published (NaN: the database did not answer).",
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "taskhub_outbox_oldest_unsent_age_seconds",
            "Age of the oldest unpublished outbox row; 0 when there is none.",
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else OTHER_METHOD
        series = self._request_series.get((method, route, status))
        if series is None:
            series = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._request_series[method, route, status] = series
        series[0].inc()
        series[1].observe(seconds)

    def count_event(self, outcome: str) -> None:
        self.events.labels(outcome).inc()

    async def observe_outbox(self, database: Database) -> None:
        """Computed on each scrape, from the outbox table itself."""
        query = select(
            func.count(), func.extract("epoch", func.now() - func.min(outbox.c.created_at))
        )
        try:
            async with asyncio.timeout(OUTBOX_QUERY_SECONDS):
                async with database.sessionmaker() as session:
                    backlog, oldest = (
                        await session.execute(query.where(outbox.c.sent_at.is_(None)))
                    ).one()
        except Exception:
            logger.warning("outbox metrics unavailable", exc_info=True)
            self.outbox_backlog.set(float("nan"))
            self.outbox_oldest_age.set(float("nan"))
            return
        self.outbox_backlog.set(backlog)
        self.outbox_oldest_age.set(max(float(oldest or 0), 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request under the template of the route that took it."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        elapsed: float | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            # The router writes the matched route into the scope it was given (this one).
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe_request(
                scope["method"],
                route,
                status,
                elapsed if elapsed is not None else time.perf_counter() - started,
            )


def metrics_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        service_metrics: ServiceMetrics = request.app.state.metrics
        database: Database | None = request.app.state.database
        if database is not None:
            await service_metrics.observe_outbox(database)
        return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
