"""The trace ids in log lines and in the headers that travel with events and calls."""

import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from taskhub_common.logs import JsonFormatter, trace_headers, traceparent_var
from taskhub_common.testing import recorded_spans
from taskhub_common.tracing import (
    background,
    handling_batch,
    link_to,
    tracer_provider,
    use_tracer_provider,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def log_line() -> dict:
    record = logging.makeLogRecord({"name": "test", "msg": "something happened"})
    return json.loads(JsonFormatter("backbone").format(record))


def test_a_log_line_in_a_span_names_its_trace_and_span() -> None:
    with TracerProvider().get_tracer("test").start_as_current_span("work") as span:
        line = log_line()
        headers = trace_headers()
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    # Events written now (outbox headers) continue this trace.
    flags = f"{int(context.trace_flags):02x}"
    assert headers["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def test_outside_a_span_the_request_traceparent_names_them() -> None:
    token = traceparent_var.set(TRACEPARENT)
    try:
        line = log_line()
    finally:
        traceparent_var.reset(token)
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "b7ad6b7169203331"
    assert "trace_id" not in log_line()


SPAN_IN_A_CHILD = """
from taskhub_common.tracing import tracer_provider
provider = tracer_provider()
print(provider is not None)
if provider is not None:
    with provider.get_tracer("test").start_as_current_span("exported"):
        pass
    provider.shutdown()  # flushes the batch
"""


def run_child(env: dict[str, str]) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", SPAN_IN_A_CHILD],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_spans_go_over_otlp_only_when_an_endpoint_is_set() -> None:
    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert run_child({}) == "False"  # no endpoint: no tracing
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        assert run_child({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "SERVICE": "tasks"}) == "True"
    finally:
        server.shutdown()
    ((path, body),) = received
    assert path == "/v1/traces"
    assert b"exported" in body and b"tasks" in body  # the span and its service.name


def test_tracing_can_be_turned_off_even_with_an_endpoint() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert run_child({**endpoint, "OTEL_SDK_DISABLED": "true"}) == "False"


def test_a_batch_is_one_consumer_span_linked_to_each_events_trace() -> None:
    with recorded_spans() as exporter:
        writers, events_headers = [], []
        for name in ("first write", "second write"):
            with tracer_provider().get_tracer("test").start_as_current_span(name) as writer:
                writers.append(writer.get_span_context())
                events_headers.append(trace_headers())
        # As AMQP may hand headers over: values as bytes.
        events_headers[1] = {key: value.encode() for key, value in events_headers[1].items()}
        with handling_batch("notifier.events", [*events_headers, {"x-attempt": 1}]):
            pass
    (batch,) = [span for span in exporter.get_finished_spans() if span.name.endswith("process")]
    assert batch.kind is SpanKind.CONSUMER
    assert batch.parent is None
    linked = [(link.context.trace_id, link.context.span_id) for link in batch.links]
    assert linked == [(writer.trace_id, writer.span_id) for writer in writers]
    assert batch.attributes["messaging.batch.message_count"] == 3


def test_without_tracing_a_batch_costs_no_span() -> None:
    use_tracer_provider(None)
    with handling_batch("notifier.events", [{"traceparent": TRACEPARENT}]):
        assert traceparent_var.get() is None


def test_a_round_of_background_work_is_a_trace_of_its_own() -> None:
    with (
        recorded_spans() as exporter,
        tracer_provider().get_tracer("test").start_as_current_span("cause") as cause,
    ):
        traceparent = trace_headers()["traceparent"]
        with background("mail batch"):
            link_to([traceparent, None])
            line = log_line()
    (round_,) = [span for span in exporter.get_finished_spans() if span.name == "mail batch"]
    assert round_.parent is None, "not a child of whatever ran around it"
    assert round_.context.trace_id != cause.get_span_context().trace_id
    assert line["trace_id"] == f"{round_.context.trace_id:032x}"
    assert [link.context.span_id for link in round_.links] == [cause.get_span_context().span_id]


def test_without_tracing_a_background_round_still_names_a_trace_in_its_lines() -> None:
    use_tracer_provider(None)
    with background("overdue sweep"):
        first = log_line()
    with background("overdue sweep"):
        second = log_line()
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16
    assert first["trace_id"] != second["trace_id"]
    assert "trace_id" not in log_line()
