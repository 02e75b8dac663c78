"""Pure ASGI middleware (BaseHTTPMiddleware breaks streaming and does not see WebSockets)."""

import logging
import re
import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskhub_common.logs import (
    new_request_id,
    new_traceparent,
    request_id_var,
    service_var,
    traceparent_var,
)

logger = logging.getLogger("taskhub.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class RequestContextMiddleware:
    """Takes or makes the request id and trace context, echoes X-Request-ID, logs one line
    (naming the service that served it)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        if not _SAFE_REQUEST_ID.match(request_id):
            request_id = new_request_id()
        traceparent = headers.get(b"traceparent", b"").decode("latin-1")
        if not _TRACEPARENT.match(traceparent):
            traceparent = new_traceparent()
        scope["request_id"] = request_id  # for the 500 handler, which runs outside this
        request_id_token = request_id_var.set(request_id)
        traceparent_token = traceparent_var.set(traceparent)
        service_token = service_var.set(self.service)
        started = time.perf_counter()
        status = 0

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            if scope["type"] == "http" and not scope["path"].startswith("/health"):
                logger.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                    },
                )
            request_id_var.reset(request_id_token)
            traceparent_var.reset(traceparent_token)
            service_var.reset(service_token)
