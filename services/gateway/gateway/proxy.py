"""The streaming reverse proxy: one pooled upstream client per service (upstream_client.py)."""

import logging

from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from gateway.clients import client_ip, client_scheme
from gateway.upstream_client import (
    Body,
    Headers,
    HttpUpstream,
    InProcessUpstream,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.upstreams import Upstream
from taskhub_common.errors import ServiceUnavailable, error_response
from taskhub_common.logs import request_id_var, traceparent_var

logger = logging.getLogger(__name__)

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
HOP_BY_HOP_RAW = {name.encode("latin-1") for name in HOP_BY_HOP}
# Set by the gateway itself; a client must not be able to supply them.
OWN_HEADERS = {
    "host",
    "forwarded",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "traceparent",
    "x-task-seen",
}


BODY_HEADERS = {"content-length", "content-type", "content-encoding"}
# Header names as the server hands them over (lower-case bytes).
DROPPED = {name.encode("latin-1") for name in HOP_BY_HOP | OWN_HEADERS}
DROPPED_WITHOUT_BODY = DROPPED | {name.encode("latin-1") for name in BODY_HEADERS}


# The request id and trace context, kept as the client sent them: in the embedded mode's
# in-process pass-through the service judges them itself, as the gateway would have.
DROPPED_IN_PROCESS = DROPPED - {b"x-request-id", b"traceparent"}


def request_headers(request: Request, with_body: bool = True) -> Headers:
    """The client's headers for an upstream call, less what only the gateway may set; without
    the body's headers for calls the gateway makes on its own (a composed GET)."""
    return [
        *forwarded_headers(request, DROPPED if with_body else DROPPED_WITHOUT_BODY),
        (b"x-request-id", (request_id_var.get() or "").encode("latin-1")),
        (b"traceparent", (traceparent_var.get() or "").encode("latin-1")),
    ]


def forwarded_headers(request: Request, dropped: set[bytes]) -> Headers:
    """The client's headers less `dropped` and any `X-User-*`, and where the request came from."""
    headers = []
    host = None
    for name, value in request.scope["headers"]:
        if name == b"host" and host is None:
            host = value
        if name not in dropped and not name.startswith(b"x-user-"):
            headers.append((name, value))
    headers += [
        (b"x-forwarded-for", client_ip(request).encode("latin-1")),
        (b"x-forwarded-proto", client_scheme(request).encode("latin-1")),
        (b"x-forwarded-host", host or b""),
    ]
    return headers


async def _request_body(request: Request, buffer_limit: int) -> Body:
    """Small bodies are read whole; large ones (uploads) stream through, never held in memory."""
    length = request.headers.get("content-length")
    if length is None and "transfer-encoding" not in request.headers:
        return None
    if length is not None and length.isdigit() and int(length) <= buffer_limit:
        return await request.body()
    return request.stream()


def upstream_failure(name: str, exc: UpstreamError) -> Response:
    """504 when a service is too slow, 503 (with Retry-After) when it cannot be reached."""
    if isinstance(exc, UpstreamTimeout):
        logger.warning("%s timed out", name)
        return error_response(504, f"The {name} service did not answer in time")
    logger.warning("%s is unreachable: %s", name, exc)
    unavailable = ServiceUnavailable(f"The {name} service is unavailable")
    return error_response(503, unavailable.detail, headers=unavailable.headers)


async def forward(request: Request, upstream: Upstream, path: str) -> Response:
    client: HttpUpstream | InProcessUpstream = request.app.state.upstream_clients[upstream.name]
    buffer_limit = request.app.state.settings.BUFFER_BODY_BYTES
    try:
        upstream_response = await client.send(
            request.method,
            path,
            request.scope["query_string"],
            request_headers(request),
            await _request_body(request, buffer_limit),
        )
    except UpstreamError as exc:
        return upstream_failure(upstream.name, exc)
    # Raw bytes: the upstream's Content-Encoding is forwarded, so nothing may decode them.
    length = upstream_response.header(b"content-length") or ""
    if length.isdigit() and int(length) <= buffer_limit:
        # A small body (every JSON answer) is read whole and sent in one piece: a streamed
        # response costs a task group and chunked writes per request.
        try:
            content = await upstream_response.read()
        except UpstreamError as exc:
            return upstream_failure(upstream.name, exc)
        response = Response(content, status_code=upstream_response.status)
    else:
        response = StreamingResponse(
            upstream_response.stream(),
            status_code=upstream_response.status,
            background=BackgroundTask(upstream_response.aclose),
        )
    # A list, not a dict: repeated headers (Set-Cookie, Link) must all get through.
    response.raw_headers = [
        (name, value)
        for name, value in upstream_response.headers
        if name.lower() not in HOP_BY_HOP_RAW
    ]
    return response
