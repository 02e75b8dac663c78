"""How the gateway calls a service: a lean HTTP/1.1 keep-alive pool on asyncio with httptools'
parser (the one uvicorn serves with), or, in the embedded mode, the service's ASGI app called
straight in this process. Both answer `send` with an `UpstreamResponse`, so the proxy and the
composed view run the same code in both modes (decision 0043).

httpx cost about a third of the gateway's CPU for these calls (URL and header models, cookie
handling, per-request locks, h11's pure-Python parser, and in the embedded mode an HTTP message
built and parsed again around an in-process call), for requests whose every byte the gateway
already holds.
"""

import asyncio
import collections
import functools
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httptools
from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskhub_common.http import local_app
from taskhub_common.tracing import tracer_provider

Headers = list[tuple[bytes, bytes]]
# None: no body; bytes: sent whole; an async iterable: streamed (an upload).
Body = bytes | AsyncIterable[bytes] | None

# Framing is the client's to set; Expect was answered by the gateway's own server already.
FRAMING = {b"content-length", b"transfer-encoding", b"host", b"expect"}
# Methods a stale keep-alive connection may be retried with: the server never saw the request.
IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
# Response bytes held per connection before the socket stops being read (a slow client).
READ_HIGH_WATER = 256 * 1024
PATH_SAFE = "/!$&'()*+,;=:@-._~"


@functools.lru_cache(maxsize=4096)
def raw_path(path: str) -> bytes:
    """The path as it goes on the wire, percent-encoded; remembered, as a session asks for the
    same few paths again and again."""
    return quote(path, safe=PATH_SAFE).encode("latin-1")


class UpstreamError(Exception):
    """The service could not be reached, or broke off its answer."""


class UpstreamTimeout(UpstreamError):
    """The service did not answer (or send the next bytes) in time."""


class UpstreamResponse:
    """Status, raw headers and a body read whole (`read`) or in pieces (`stream`), once."""

    def __init__(
        self,
        status: int,
        headers: Headers,
        chunks: AsyncIterator[bytes],
        close: Callable[[], None],
    ) -> None:
        self.status = status
        self.headers = headers
        self._chunks = chunks
        self._close = close
        self._closed = False

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    async def read(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._chunks])
        finally:
            await self.aclose()

    async def stream(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release the connection; one closed before its body ended is not reused."""
        if not self._closed:
            self._closed = True
            self._close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection, fed to httptools' response parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.broken: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._writable = True
        self.begin()

    def begin(self) -> None:
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        # The answer to a HEAD: no body, whatever its Content-Length says.
        self.head_only = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.reading_paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.broken = exc
            self.close()
        self._wake()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        # Asked now: once the message is complete the parser has moved on to the next one.
        self.keep_alive = self.parser.should_keep_alive()
        self.head_done = True
        if self.head_only:
            # The parser would wait for the body the length announces and read the next
            # answer as it: the answer ends here, and the connection with it.
            self.complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > READ_HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # The client's side
    def usable(self) -> bool:
        return not self.lost and self.broken is None

    def reusable(self) -> bool:
        return self.usable() and self.complete and self.keep_alive

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered < READ_HIGH_WATER // 4 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes, within: float) -> None:
        if not self.usable():
            raise UpstreamError("connection closed")
        assert self.transport is not None
        self.transport.write(data)
        while not self._writable and self.usable():
            await self.wait(within)

    async def wait(self, within: float) -> None:
        """Until bytes arrive, the socket drains, or the connection ends; UpstreamTimeout after
        `within` seconds of nothing."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(within, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("no answer in time"))


class HttpUpstream:
    """A pool of keep-alive HTTP/1.1 connections to one service."""

    def __init__(
        self,
        base_url: str,
        timeout: float,
        connect_timeout: float,
        max_connections: int = 100,
        # Idle connections are dropped before uvicorn's 5 s keep-alive closes them.
        keepalive_expiry: float = 2.0,
    ) -> None:
        address = urlsplit(base_url)
        self.host = address.hostname or "127.0.0.1"
        self.port = address.port or 80
        self.host_header = address.netloc.encode("latin-1")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.slots = asyncio.Semaphore(max_connections)
        self.idle: list[_Connection] = []

    async def send(
        self, method: str, path: str, query: bytes, headers: Headers, body: Body = None
    ) -> UpstreamResponse:
        await self.slots.acquire()
        try:
            return await self._send(method, path, query, headers, body)
        except BaseException:
            self.slots.release()
            raise

    async def _send(
        self, method: str, path: str, query: bytes, headers: Headers, body: Body
    ) -> UpstreamResponse:
        head, chunked = self._head(method, path, query, headers, body)
        replayable = method in IDEMPOTENT and not isinstance(body, AsyncIterable)
        while True:
            connection, reused = await self._connection()
            connection.head_only = method == "HEAD"
            try:
                await self._write_request(connection, head, body, chunked)
                while not connection.head_done:
                    if not connection.usable():
                        raise UpstreamError(f"connection lost: {connection.broken or 'closed'}")
                    await connection.wait(self.timeout)
            except UpstreamError:
                connection.close()
                # A kept-alive connection the service closed just as it was taken: once more on
                # a new one, for a request that cannot have been seen.
                if reused and replayable and not connection.received_any:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return UpstreamResponse(
                connection.status,
                connection.headers,
                self._body(connection),
                functools.partial(self._release, connection),
            )

    def _head(
        self, method: str, path: str, query: bytes, headers: Headers, body: Body
    ) -> tuple[bytes, bool]:
        """The request line and headers, and whether the body goes chunked."""
        target = raw_path(path)
        if query:
            target += b"?" + query
        lines = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        length = None
        for name, value in headers:
            if name.lower() in FRAMING:
                if name.lower() == b"content-length":
                    length = value
                continue
            lines += [name, b": ", value, b"\r\n"]
        streamed = body is not None and not isinstance(body, bytes)
        # A stream goes with the length the client declared, else chunked.
        chunked = streamed and length is None
        if isinstance(body, bytes):
            lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        elif chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        elif streamed and length is not None:
            lines += [b"content-length: ", length, b"\r\n"]
        lines.append(b"\r\n")
        return b"".join(lines), chunked

    async def _write_request(
        self, connection: _Connection, head: bytes, body: Body, chunked: bool
    ) -> None:
        if body is None or isinstance(body, bytes):
            await connection.write(head + (body or b""), self.timeout)
            return
        await connection.write(head, self.timeout)
        async for chunk in body:
            if chunk:
                data = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk
                await connection.write(data, self.timeout)
        if chunked:
            await connection.write(b"0\r\n\r\n", self.timeout)

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            if connection.usable() and now - connection.idle_since < self.keepalive_expiry:
                connection.begin()
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError as exc:
            raise UpstreamTimeout("connect timed out") from exc
        except OSError as exc:
            raise UpstreamError(f"connect failed: {exc}") from exc
        return connection, False

    async def _body(self, connection: _Connection) -> AsyncIterator[bytes]:
        while True:
            while connection.chunks:
                yield connection.take()
            if connection.complete:
                return
            if not connection.usable():
                raise UpstreamError("the answer broke off")
            await connection.wait(self.timeout)

    def _release(self, connection: _Connection) -> None:
        if connection.reusable() and not connection.chunks:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()
        self.slots.release()

    async def aclose(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


class InProcessUpstream:
    """A service's ASGI app in this process (the embedded mode), called straight: the request's
    scope is handed over as it is, with no HTTP message written and parsed again. The app runs
    in a task of its own, so a large answer still streams (a few chunks in flight). No timeout:
    the work is this process's own, as it was with httpx's ASGI transport."""

    def __init__(self, app: ASGIApp, base_url: str) -> None:
        address = urlsplit(base_url)
        self.app = app
        self.server = (address.hostname or "127.0.0.1", address.port or 80)
        self.host_header = address.netloc.encode("latin-1")
        self.running: set[asyncio.Task[None]] = set()

    def scope(self, method: str, path: str, query: bytes, headers: Headers) -> Scope:
        """The request as the service's app sees it: from its own host, the gateway the client."""
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path(path),
            "query_string": query,
            "root_path": "",
            # The names as the gateway's server handed them over, lower-case (request_headers).
            "headers": [
                (b"host", self.host_header),
                *((name, value) for name, value in headers if name != b"host"),
            ],
            "server": self.server,
            "client": ("127.0.0.1", 0),
        }

    async def serve(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Headers,
        receive: Receive,
        send: Send,
    ) -> None:
        """The app reads the client's body and answers the client itself: nothing is buffered
        or copied between them (the embedded mode's pass-through, decision 0092)."""
        await self.app(self.scope(method, path, query, headers), receive, send)

    async def send(
        self, method: str, path: str, query: bytes, headers: Headers, body: Body = None
    ) -> UpstreamResponse:
        scope = self.scope(method, path, query, headers)
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Message] = loop.create_future()
        # Body chunks, then None at the end, or the exception the app raised after it started.
        chunks: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(maxsize=8)
        sent = {"request": False, "response": False}

        async def receive() -> Message:
            if isinstance(body, AsyncIterable):
                async for chunk in body:
                    return {"type": "http.request", "body": chunk, "more_body": True}
            if not sent["request"]:
                sent["request"] = True
                payload = body if isinstance(body, bytes) else b""
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.Future()  # never a disconnect: the task is cancelled if the caller goes
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not started.done():  # else the caller gave up waiting
                    started.set_result(message)
            elif message["type"] == "http.response.body" and not sent["response"]:
                if message.get("body"):
                    await chunks.put(message["body"])
                if not message.get("more_body", False):
                    sent["response"] = True
                    await chunks.put(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)  # raised to the caller, as the app raised it
                elif not sent["response"]:
                    sent["response"] = True
                    await chunks.put(UpstreamError(f"the answer broke off: {exc!r}"))
                return
            if not started.done():
                started.set_exception(UpstreamError("the service sent no answer"))

        task = loop.create_task(run())
        # Held until done: a task's only strong reference would otherwise be the loop's weak one.
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        try:
            start = await started
        except BaseException:
            task.cancel()
            raise

        async def body_chunks() -> AsyncIterator[bytes]:
            while (chunk := await chunks.get()) is not None:
                if isinstance(chunk, Exception):
                    raise chunk
                yield chunk

        def close() -> None:
            # An answer abandoned half-way stops the app; a finished one lets it end on its own
            # (background tasks, logs and metrics run after the last byte).
            if not sent["response"]:
                task.cancel()

        return UpstreamResponse(start["status"], list(start["headers"]), body_chunks(), close)

    async def aclose(self) -> None:
        """The app's lifespan is the embedded runner's, not this client's."""


class TracedUpstream:
    """A client span around each call of another client, its context sent on as `traceparent`
    (when traces are on: taskhub_common.tracing). The span ends when the answer's head is in."""

    def __init__(self, client: "HttpUpstream | InProcessUpstream", base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    async def send(
        self, method: str, path: str, query: bytes, headers: Headers, body: Body = None
    ) -> UpstreamResponse:
        url = self.base_url + path + ("?" + query.decode("latin-1") if query else "")
        provider = tracer_provider()
        tracer = provider.get_tracer(__name__) if provider else trace.get_tracer(__name__)
        with tracer.start_as_current_span(
            method, kind=trace.SpanKind.CLIENT, attributes={"http.method": method, "http.url": url}
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            injected = {name.encode("latin-1"): value for name, value in carrier.items()}
            headers = [(name, value) for name, value in headers if name not in injected]
            headers += [(name, value.encode("latin-1")) for name, value in injected.items()]
            response = await self.client.send(method, path, query, headers, body)
            span.set_attribute("http.status_code", response.status)
            return response

    async def aclose(self) -> None:
        await self.client.aclose()


UpstreamClient = HttpUpstream | InProcessUpstream | TracedUpstream


def make_upstream_client(base_url: str, timeout: float, connect_timeout: float) -> UpstreamClient:
    """The service's app when this process runs it (the embedded mode), else its URL; traced
    when traces are on."""
    app = local_app(base_url)
    client: HttpUpstream | InProcessUpstream = (
        InProcessUpstream(app, base_url)
        if app is not None
        else HttpUpstream(base_url, timeout, connect_timeout)
    )
    return TracedUpstream(client, base_url) if tracer_provider() else client


async def get_json(client: UpstreamClient, path: str, within: float) -> tuple[int, Any]:
    """A small JSON document the gateway asks for itself (readiness, OpenAPI): the status and
    the parsed body, None when it is not JSON."""
    try:
        async with asyncio.timeout(within):
            response = await client.send("GET", path, b"", [])
            body = await response.read()
    except TimeoutError as exc:
        raise UpstreamTimeout(f"no answer to {path} in time") from exc
    if not (response.header(b"content-type") or "").startswith("application/json"):
        return response.status, None
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, None
