"""Traces (OpenTelemetry), when asked for: with OTEL_EXPORTER_OTLP_ENDPOINT set (the other
OTEL_EXPORTER_OTLP_* variables apply; OTEL_SDK_DISABLED=true still turns it off), each service
app gets a server span per request, each client from `make_http_client` a client span per call
carrying the current `traceparent`, and the spans go over OTLP/HTTP. A request through the
gateway is then one trace across every service it touches.

Off, nothing is instrumented (spans cost about as much as the rest of a small request,
decision 0081): the gateway forwards the client's `traceparent` (or the one it made) as it is,
so the log lines of every service still share the request's trace id.
"""

import os

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

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
