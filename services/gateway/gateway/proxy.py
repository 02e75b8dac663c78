"""The streaming reverse proxy: one pooled httpx client per upstream."""

import logging

import httpx
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from gateway.clients import client_ip, client_scheme
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


def request_headers(request: Request, with_body: bool = True) -> list[tuple[str, str | bytes]]:
    """The client's headers for an upstream call, less what only the gateway may set; without
    the body's headers for calls the gateway makes on its own (a composed GET)."""
    dropped = OWN_HEADERS if with_body else OWN_HEADERS | BODY_HEADERS
    headers: list[tuple[str, str | bytes]] = [
        # Forwarded as the bytes that came in (Starlette decoded them as Latin-1): httpx would
        # encode a str as ASCII, and a client's non-ASCII header value was a 500.
        (name, value.encode("latin-1"))
        for name, value in request.headers.items()
        if name not in HOP_BY_HOP and name not in dropped and not name.startswith("x-user-")
    ]
    headers += [
        ("x-forwarded-for", client_ip(request)),
        ("x-forwarded-proto", client_scheme(request)),
        ("x-forwarded-host", request.headers.get("host", "")),
        ("x-request-id", request_id_var.get() or ""),
        ("traceparent", traceparent_var.get() or ""),
    ]
    return headers


async def _request_body(request: Request, buffer_limit: int):
    """Small bodies are read whole; large ones (uploads) stream through, never held in memory."""
    length = request.headers.get("content-length")
    if length is None and "transfer-encoding" not in request.headers:
        return None
    if length is not None and length.isdigit() and int(length) <= buffer_limit:
        return await request.body()
    return request.stream()


def upstream_failure(name: str, exc: httpx.TransportError) -> Response:
    """504 when a service is too slow, 503 when it cannot be reached."""
    if isinstance(exc, httpx.TimeoutException):
        logger.warning("%s timed out", name)
        return error_response(504, f"The {name} service did not answer in time")
    logger.warning("%s is unreachable", name, exc_info=True)
    unavailable = ServiceUnavailable(f"The {name} service is unavailable")
    return error_response(503, unavailable.detail, headers=unavailable.headers)


async def forward(request: Request, upstream: Upstream, path: str) -> Response:
    client: httpx.AsyncClient = request.app.state.upstream_clients[upstream.name]
    upstream_request = client.build_request(
        request.method,
        httpx.URL(path=path, query=request.url.query.encode()),
        headers=request_headers(request),
        content=await _request_body(request, request.app.state.settings.BUFFER_BODY_BYTES),
    )
    try:
        upstream_response = await client.send(upstream_request, stream=True)
    except httpx.TransportError as exc:
        return upstream_failure(upstream.name, exc)
    # Raw bytes: the upstream's Content-Encoding is forwarded, so nothing may decode them.
    length = upstream_response.headers.get("content-length", "")
    if length.isdigit() and int(length) <= request.app.state.settings.BUFFER_BODY_BYTES:
        # A small body (every JSON answer) is read whole and sent in one piece: a streamed
        # response costs a task group and chunked writes per request.
        try:
            content = b"".join([chunk async for chunk in upstream_response.aiter_raw()])
        except httpx.TransportError as exc:
            return upstream_failure(upstream.name, exc)
        finally:
            await upstream_response.aclose()
        response = Response(content, status_code=upstream_response.status_code)
    else:
        response = StreamingResponse(
            upstream_response.aiter_raw(),
            status_code=upstream_response.status_code,
            background=BackgroundTask(upstream_response.aclose),
        )
    # A list, not a dict: repeated headers (Set-Cookie, Link) must all get through.
    response.raw_headers = [
        (name, value)
        for name, value in upstream_response.headers.raw
        if name.lower() not in HOP_BY_HOP_RAW
    ]
    return response
