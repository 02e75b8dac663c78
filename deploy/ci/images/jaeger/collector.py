#!/usr/bin/env python3
"""A trace collector with the bits of Jaeger's API that CI reads (spans are kept in memory):

- OTLP/HTTP on 4318: POST /v1/traces, protobuf (the services' exporter) or JSON;
- on 16686: GET /api/services, and GET /api/traces?service=<name> (the traces that have a
  span of that service, each with its spans and their processes, as Jaeger shapes them).
"""

import threading
from collections import defaultdict
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ci_http import QuietHandler
from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

# trace id (hex) -> spans: {"spanID", "parentSpanID", "operationName", "service"}
traces: dict[str, list[dict]] = defaultdict(list)
lock = threading.Lock()


def take(request: ExportTraceServiceRequest) -> None:
    with lock:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    attribute.value.string_value
                    for attribute in resource_spans.resource.attributes
                    if attribute.key == "service.name"
                ),
                "unknown",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    traces[span.trace_id.hex()].append(
                        {
                            "spanID": span.span_id.hex(),
                            "parentSpanID": span.parent_span_id.hex(),
                            "operationName": span.name,
                            "service": service,
                        }
                    )


def jaeger_trace(trace_id: str, spans: list[dict]) -> dict:
    services = sorted({span["service"] for span in spans})
    process_of = {service: f"p{index}" for index, service in enumerate(services, 1)}
    return {
        "traceID": trace_id,
        "spans": [
            {
                "traceID": trace_id,
                "spanID": span["spanID"],
                "operationName": span["operationName"],
                "references": (
                    [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": span["parentSpanID"]}]
                    if span["parentSpanID"]
                    else []
                ),
                "processID": process_of[span["service"]],
            }
            for span in spans
        ],
        "processes": {process: {"serviceName": name} for name, process in process_of.items()},
    }


class Handler(QuietHandler):
    def do_POST(self) -> None:
        if self.path != "/v1/traces":
            self.reply(404, b"", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            Parse(body, request)
        else:
            request.ParseFromString(body)
        take(request)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.reply(200, answer, "application/x-protobuf")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        with lock:
            snapshot = {trace_id: list(spans) for trace_id, spans in traces.items()}
        if url.path == "/api/services":
            names = sorted({span["service"] for spans in snapshot.values() for span in spans})
            self.reply_json({"data": names})
        elif url.path == "/api/traces":
            service = parse_qs(url.query).get("service", [""])[0]
            found = [
                jaeger_trace(trace_id, spans)
                for trace_id, spans in snapshot.items()
                if any(span["service"] == service for span in spans)
            ]
            self.reply_json({"data": found})
        else:
            self.reply(404, b"", "text/plain")


def main() -> None:
    otlp = ThreadingHTTPServer(("0.0.0.0", 4318), Handler)  # noqa: S104
    threading.Thread(target=otlp.serve_forever, daemon=True).start()
    print("OTLP/HTTP on 4318, query API on 16686", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 16686), Handler).serve_forever()  # noqa: S104


if __name__ == "__main__":
    main()
