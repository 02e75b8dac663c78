"""Traces (OpenTelemetry), when asked for: with OTEL_EXPORTER_OTLP_ENDPOINT set (the other
OTEL_EXPORTER_OTLP_* variables apply; OTEL_SDK_DISABLED=true still turns it off), each service
app gets a server span per request, each client from `make_http_client` a client span per call
carrying the current `traceparent`, and the spans go over OTLP/HTTP. A request through the
gateway is then one trace across every service it touches. Events continue it: the outbox row
keeps the writer's `traceparent`, the relay publishes under a producer span of that trace
(`publishing`), and the RabbitMQ consumer handles the event under a consumer span below it
(`handling`), so what a handler writes, calls or publishes joins the same trace. A batch of
events handled in one transaction is one consumer span linked to each event's trace
(`handling_batch`, as OpenTelemetry's messaging conventions do for batches); a batch of one is
handled alone, as a child of its trace. A round of background work (a clock's tick, a batch of
mail) is a trace of its own (`background`), linked to the traces that caused what it handles
(`link_to`).

Off, nothing is instrumented (spans cost about as much as the rest of a small request,
decision 0081): the gateway forwards the client's `traceparent` (or the one it made) as it is,
so the log lines of every service still share the request's trace id.
"""

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from taskhub_common.events import EXCHANGE
from taskhub_common.logs import new_traceparent, request_id_var, traceparent_var

_PROPAGATOR = TraceContextTextMapPropagator()

_provider: TracerProvider | None = None
_configured = False


def tracer_provider() -> TracerProvider | None:
    """The process's provider, made on first use from the environment: one per process, since
    the embedded mode hosts every service in one (its spans name `taskhub` as their service)."""
    global _provider, _configured
    if not _configured:
        _configured = True
        enabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
        if enabled and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            # Imported only here: the exporter pulls in protobuf.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            name = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("SERVICE") or "taskhub"
            provider = TracerProvider(resource=Resource.create({"service.name": name}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _provider = provider
    return _provider


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace the apps and clients made from now on with `provider` (None: stop); for tests."""
    global _provider, _configured
    _provider, _configured = provider, True


def trace_app(app: FastAPI) -> None:
    if provider := tracer_provider():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Probes and scrapes every few seconds would drown the traces that matter, and a span
        # per ASGI send or receive message is noise.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls="/health/live,/health/ready,/metrics",
            exclude_spans=["receive", "send"],
        )


def trace_client(client: httpx.AsyncClient) -> None:
    if provider := tracer_provider():
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


@contextlib.contextmanager
def publishing(routing_key: str, headers: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The headers to publish an outbox row's event with: with tracing on, under a producer span
    in the trace the row recorded, whose `traceparent` the headers then carry."""
    provider = tracer_provider()
    if provider is None:
        yield dict(headers)
        return
    tracer = provider.get_tracer("taskhub.events")
    with tracer.start_as_current_span(
        f"{routing_key} publish",
        context=_PROPAGATOR.extract(headers),
        kind=SpanKind.PRODUCER,
        attributes=_messaging(
            "publish", EXCHANGE, {"messaging.rabbitmq.destination.routing_key": routing_key}
        ),
    ):
        carried = dict(headers)
        _PROPAGATOR.inject(carried)
        yield carried


def _messaging(
    operation: str, destination: str, more: dict[str, str | int]
) -> dict[str, str | int]:
    """A messaging span's attributes (OpenTelemetry's messaging conventions)."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation": operation,
        "messaging.destination.name": destination,
        **more,
    }


def _trace_headers(headers: Mapping[str, object]) -> dict[str, str]:
    """The trace and request id of a message's headers (AMQP may hand them over as bytes)."""
    return {
        key: value.decode() if isinstance(value, bytes) else value
        for key, value in headers.items()
        if key in ("traceparent", "x-request-id") and isinstance(value, str | bytes)
    }


@contextlib.contextmanager
def handling(queue: str, routing_key: str, headers: Mapping[str, object]) -> Iterator[None]:
    """The context an event is handled in: its request id and trace for the log lines, and with
    tracing on a consumer span in the event's trace (from its `traceparent` header)."""
    carried = _trace_headers(headers)
    request_id = request_id_var.set(carried.get("x-request-id"))
    traceparent = traceparent_var.set(carried.get("traceparent"))
    try:
        provider = tracer_provider()
        if provider is None:
            yield
            return
        tracer = provider.get_tracer("taskhub.events")
        with tracer.start_as_current_span(
            f"{routing_key} process",
            context=_PROPAGATOR.extract(carried),
            kind=SpanKind.CONSUMER,
            attributes=_messaging(
                "process", queue, {"messaging.rabbitmq.destination.routing_key": routing_key}
            ),
        ):
            yield
    finally:
        traceparent_var.reset(traceparent)
        request_id_var.reset(request_id)


@contextlib.contextmanager
def handling_batch(queue: str, headers: list[Mapping[str, object]]) -> Iterator[None]:
    """The context a batch of events is handled in: with tracing on, one consumer span with a
    link to each event's trace (a span has one parent, a batch has many)."""
    provider = tracer_provider()
    if provider is None:
        yield
        return
    links = []
    for carried in headers:
        parent = trace.get_current_span(_PROPAGATOR.extract(_trace_headers(carried)))
        if parent.get_span_context().is_valid:
            links.append(trace.Link(parent.get_span_context()))
    tracer = provider.get_tracer("taskhub.events")
    with tracer.start_as_current_span(
        f"{queue} process",
        context=Context(),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=_messaging("process", queue, {"messaging.batch.message_count": len(headers)}),
    ):
        yield


@contextlib.contextmanager
def background(name: str) -> Iterator[None]:
    """A round of background work as a trace of its own, so that its log lines and the calls it
    makes name one: a root span with tracing on, else a new `traceparent` for the log lines."""
    provider = tracer_provider()
    if provider is None:
        traceparent = traceparent_var.set(new_traceparent())
        try:
            yield
        finally:
            traceparent_var.reset(traceparent)
        return
    with provider.get_tracer("taskhub.background").start_as_current_span(name, context=Context()):
        yield


def link_to(traceparents: Iterable[str | None]) -> None:
    """Link the current span to the traces that caused the work it is doing (as a batch does)."""
    span = trace.get_current_span()
    for traceparent in traceparents:
        if traceparent:
            cause = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent}))
            if cause.get_span_context().is_valid:
                span.add_link(cause.get_span_context())
