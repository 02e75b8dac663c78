"""Limits on what a request may make a process read: the size of its body and of its headers.

A pure ASGI middleware, so the body is counted as it streams in, before anything parses it: a
body over its limit is answered 413 as soon as its bytes pass the limit (at once when its
Content-Length says so), and the connection is closed rather than read to the end. Headers
past their count or size are answered 431 before the app sees the request.
"""

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskhub_common.errors import error_response
from taskhub_common.settings import ServiceSettings

# The body limit of one request: given its method and path.
BodyLimit = Callable[[str, str], int]


class BodyTooLarge(Exception):
    """Raised into the app from `receive` once the body passes its limit."""


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: ServiceSettings) -> None:
        self.app = app
        self.body_limit: BodyLimit = settings.max_body_bytes
        self.max_header_count = settings.MAX_HEADER_COUNT
        self.max_header_bytes = settings.MAX_HEADER_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        header_bytes = sum(len(name) + len(value) for name, value in headers)
        if len(headers) > self.max_header_count or header_bytes > self.max_header_bytes:
            if scope["type"] == "http":
                await refuse(
                    send,
                    431,
                    f"At most {self.max_header_count} headers of {self.max_header_bytes} bytes "
                    "in all are accepted",
                )
            else:
                await send({"type": "websocket.close", "code": 1009})
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        limit = self.body_limit(scope["method"], scope["path"])
        too_large = f"The request body is larger than the limit of {limit} bytes"
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await refuse(send, 413, too_large)
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(too_large)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Once the body was cut off, whatever the app makes of it (a 400 for a body it
            # could not parse, a 500) gives way to the 413.
            if exceeded and not response_started:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Past a started response, the server must see the failure and drop the connection.
            if not exceeded or response_started:
                raise
        if exceeded and not response_started:
            await refuse(send, 413, too_large)


async def refuse(send: Send, status_code: int, detail: str) -> None:
    """The standard error body, on a connection the server closes after it: the rest of the
    request is not read."""
    response = error_response(status_code, detail, headers={"Connection": "close"})
    await send(
        {"type": "http.response.start", "status": status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
