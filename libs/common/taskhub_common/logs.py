"""Structured JSON logs, the request id and the W3C trace context of the current request."""

import json
import logging
import secrets
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# The service a line comes from: in the embedded mode one process hosts them all.
service_var: ContextVar[str | None] = ContextVar("service", default=None)
traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

# A record's own attributes, not fields of the line; uvicorn's color_message is its message again
# with terminal colour codes.
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": service_var.get() or self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := request_id_var.get():
            entry["request_id"] = request_id
        if ids := current_trace_ids():
            entry["trace_id"], entry["span_id"] = ids
        entry.update(
            {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS}
        )
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One readable line per record, for a person at a terminal: time, level, service, message
    and the record's own fields (the request and trace ids are left to the JSON lines)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        service = service_var.get() or self.service
        line = f"{time} {record.levelname:<7} {service:<9} {record.getMessage()}"
        fields = [
            f"{key}={value}" for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS
        ]
        if fields:
            line += "  " + " ".join(fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


# Libraries whose INFO lines say nothing to someone running TaskHub (the embedded server's
# every command, alembic's set-up): shown only with LOG_LEVEL=DEBUG.
QUIET_LOGGERS = ("pgserver", "alembic")


def configure_logging(service: str, level: str = "INFO", log_format: str = "auto") -> None:
    """JSON lines (containers, production), or readable lines with `text`, or with `auto` when
    stderr is a terminal."""
    handler = logging.StreamHandler(sys.stderr)
    text = log_format == "text" or (log_format == "auto" and sys.stderr.isatty())
    handler.setFormatter(TextFormatter(service) if text else JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    debugging = root.getEffectiveLevel() <= logging.DEBUG
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debugging else logging.WARNING)
    # One access line per request is ours; httpx's own line per call would double it.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def new_request_id() -> str:
    return uuid.uuid4().hex


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def current_trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, or else of the request's traceparent."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
    if traceparent := traceparent_var.get():
        _, trace_id, span_id, _ = traceparent.split("-")
        return trace_id, span_id
    return None


def current_traceparent() -> str | None:
    """The current span's traceparent, or else the request's."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent") or traceparent_var.get()


def trace_headers() -> dict[str, str]:
    """Headers that carry the current trace and request along with an event or a call."""
    headers = {}
    if traceparent := current_traceparent():
        headers["traceparent"] = traceparent
    if request_id := request_id_var.get():
        headers["x-request-id"] = request_id
    return headers
