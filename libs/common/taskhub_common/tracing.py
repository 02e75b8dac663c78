"""Traces (OpenTelemetry): a server span per request to a service app, a client span per call
made with `make_http_client`, and the W3C `traceparent` between them, so a request through
the gateway is one trace across every service it touches. Spans leave the process over
OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT is set (the other OTEL_EXPORTER_OTLP_*
variables apply); OTEL_SDK_DISABLED=true turns tracing off.
"""

import os

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_provider: TracerProvider | None = None


def tracer_provider() -> TracerProvider | None:
    """The process's provider, made on first use: one per process, since the embedded mode
    hosts every service in one (its spans name `taskhub` as their service)."""
    global _provider
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if _provider is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("SERVICE") or "taskhub"
        provider = TracerProvider(resource=Resource.create({"service.name": name}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            # Imported only here: the exporter pulls in protobuf.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _provider = provider
    return _provider


def trace_app(app: FastAPI) -> None:
    if provider := tracer_provider():
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
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
