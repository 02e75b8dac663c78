"""The WebSocket endpoints: `/ws` (the access token as the subprotocol `bearer, <token>`, or a
ticket from POST /api/auth/ws-ticket as `?ticket=`) and `/ws/{token}` for the seed's SPA.

Each socket has a bounded send queue and its own writer task: the hub never waits for a
client, and a client that lets the queue fill is closed (1013). The hub offers messages in seq
order; the writer drops those it has sent already, so a socket that resumes (`?since=&epoch=`,
or a first message `{"type": "resume", ...}`) gets the log's messages for its user after
`since` and then the live ones, each once.

The fast path (decision 0075): while a socket's writer has nothing queued, the hub writes an
event's frame, encoded once for all sockets, straight to the connection's transport under
uvicorn (no task wake-up, no per-socket encoding or compression); a transport holding more
than WS_SEND_QUEUE such frames unsent means a client that does not keep up (1013).
Close codes are in docs/live-updates.md.
"""

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from limits import parse
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState
from websockets.protocol import State

from gateway.clients import client_ip
from gateway.live import LiveUpdates, Outgoing, may_receive
from gateway.rate_limits import RateLimited
from gateway.settings import GatewaySettings
from gateway.streams import message_text
from gateway.tickets import Grant
from taskhub_common.auth import TokenVerifier
from taskhub_common.errors import AppError, NotAuthenticated

logger = logging.getLogger(__name__)

BAD_CREDENTIALS = 4001
TOO_MANY_SOCKETS = 4008
SLOW_CLIENT = 1013
MESSAGE_TOO_BIG = 1009
UNAVAILABLE = 1011
CLOSE_TIMEOUT_SECONDS = 30
# Where ServerSend puts the server's own `send` in a WebSocket's scope.
SERVER_SEND = "taskhub.server_send"


@dataclass(frozen=True)
class Resume:
    """A client's request to continue its stream after `since` (a queue item for the writer)."""

    since: int
    epoch: str | None


@dataclass(frozen=True)
class Resync:
    """The hub cannot give this socket what follows: the client reloads, and carries on from
    `seq` in `epoch` (a queue item for the writer). `force`: even if the socket has had
    everything up to `seq` (an event the log refused to number)."""

    epoch: str
    seq: int
    force: bool = False


def control(message_type: str, **data: Any) -> str:
    """A message that is not an event (no id, no seq)."""
    return json.dumps({"type": message_type, **({"data": data} if data else {})})


class LiveSocket:
    def __init__(self, websocket: WebSocket, grant: Grant, live: LiveUpdates) -> None:
        self.websocket = websocket
        self.user_id = grant.user_id
        self.expires_at = grant.expires_at
        self.live = live
        self.settings: GatewaySettings = live.settings
        self.queue: asyncio.Queue[tuple[int | None, str] | Resume | Resync] = asyncio.Queue(
            self.settings.WS_SEND_QUEUE
        )
        self.epoch = ""
        self.last_seq = 0
        self.sent_events = 0
        self.closed = False
        self.reauthenticated = asyncio.Event()
        # uvicorn's connection, for the fast path; the writer waits on an empty queue.
        self._connection = server_connection(websocket)
        self._idle = False
        # The last resync sent, until an event follows it (the client is not told twice).
        self._resynced: tuple[str, int] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None
        # A close started by offer(), which cannot wait for it.
        self._closing: asyncio.Task[None] | None = None

    def offer(self, seq: int | None, text: str) -> None:
        """Queue a message for the writer (never waits)."""
        self._put((seq, text))

    def offer_events(self, outgoing: Outgoing) -> None:
        """Send or queue event messages (never waits): their frames straight to the transport
        when nothing is queued before them and none was sent already, else to the writer."""
        # Only with nothing queued is last_seq where this socket stands (a queued resync or
        # resume may move it).
        if self._writes_directly():
            first, last = outgoing.messages[0][0], outgoing.messages[-1][0]
            if last <= self.last_seq:
                return  # sent already, from the log
            if first > self.last_seq:
                self._write_directly(last, outgoing)
                return
        for seq, text in outgoing.messages:
            self._put((seq, text))

    def resync(self, epoch: str, seq: int, force: bool = False) -> None:
        self._put(Resync(epoch, seq, force))

    def _writes_directly(self) -> bool:
        connection = self._connection
        return (
            connection is not None
            and self._idle
            and self.queue.empty()
            and not self.closed
            and connection.conn.state is State.OPEN
            and not connection.close_sent
        )

    def _write_directly(self, last: int, outgoing: Outgoing) -> None:
        transport = self._connection.transport
        # More than WS_SEND_QUEUE messages of this size unsent: the client does not keep up.
        frames, count = outgoing.frames, len(outgoing.messages)
        if transport.get_write_buffer_size() * count > self.settings.WS_SEND_QUEUE * len(frames):
            self._too_slow()
            return
        transport.write(frames)
        self.last_seq = last
        self.sent_events += count
        self._resynced = None

    def _put(self, item: tuple[int | None, str] | Resync) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self._too_slow()

    def _too_slow(self) -> None:
        """The client does not keep up: closed, and the close frame follows what it has."""
        logger.info("closing a socket of user %s: it does not keep up", self.user_id)
        self.closed = True
        self._closing = asyncio.create_task(self._close(SLOW_CLIENT, "too slow"))

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        self.live.hub.leave(self)
        for task in (self._writer, self._expiry):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self.websocket.close(code, reason)

    async def run(self, resume: Resume | None) -> None:
        self.epoch, self.last_seq = await self.live.hub.start_point()
        self._writer = asyncio.create_task(self._write(resume), name="socket writer")
        self._expiry = asyncio.create_task(self._watch_expiry(), name="socket expiry")
        tasks = [self._writer, self._expiry]
        try:
            await self._read()
        finally:
            self.closed = True
            self.live.hub.leave(self)
            for task in tasks:
                task.cancel()
            if self._closing is not None:
                tasks.append(self._closing)
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- what the client sends

    async def _read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or ""
            if len(raw) > self.settings.WS_MAX_MESSAGE_BYTES:
                await self.close(MESSAGE_TOO_BIG, "message too big")
                return
            try:
                request = json.loads(raw)
                kind = request.get("type") if isinstance(request, dict) else None
            except ValueError:
                kind = None
            if kind == "auth":
                if not await self._reauthenticate(request.get("token")):
                    await self.close(BAD_CREDENTIALS, "invalid token")
                    return
            elif kind == "resume":
                self._resume_requested(request)
            elif kind == "ping":
                self.offer(None, control("pong"))
            else:
                self.offer(None, control("error", detail="unknown message"))

    async def _reauthenticate(self, token: object) -> bool:
        """A fresh access token, for the same user, extends the socket's life."""
        if not isinstance(token, str):
            return False
        grant = await verify_token(self.websocket, token)
        if grant is None or grant.user_id != self.user_id:
            return False
        self.expires_at = grant.expires_at
        self.reauthenticated.set()
        self.offer(None, control("auth_ok", expires_at=int(grant.expires_at)))
        return True

    def _resume_requested(self, request: dict[str, Any]) -> None:
        since, epoch = request.get("since"), request.get("epoch")
        if not isinstance(since, int):
            self.offer(None, control("error", detail="resume needs since and epoch"))
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Resume(since, epoch if isinstance(epoch, str) else None))

    # --- what the server sends

    async def _write(self, resume: Resume | None) -> None:
        send = self.websocket.send_text
        await send(control("hello", epoch=self.epoch, seq=self.last_seq))
        if resume is not None:
            await self._resume(resume)
        while True:
            self._idle = True
            item = await self.queue.get()
            self._idle = False
            if isinstance(item, Resume):
                await self._resume(item)
            elif isinstance(item, Resync):
                await self._resync(item)
            else:
                seq, text = item
                if seq is None:
                    await send(text)
                elif seq > self.last_seq:  # otherwise sent already, from the history
                    await send(text)
                    self.last_seq = seq
                    self.sent_events += 1
                    self._resynced = None

    async def _resync(self, item: Resync) -> None:
        # In the same epoch, the client carries on after what it has (never before it).
        seq = item.seq if item.epoch != self.epoch else max(item.seq, self.last_seq)
        if (item.epoch, seq) == self._resynced:
            return  # told just now, and nothing sent since
        if item.force or item.epoch != self.epoch or item.seq > self.last_seq:
            await self.websocket.send_text(control("resync", epoch=item.epoch, seq=seq))
            self.epoch, self.last_seq = item.epoch, seq
            self._resynced = (item.epoch, seq)

    async def _resume(self, resume: Resume) -> None:
        if self.sent_events:
            # Events went out before the request came: older ones now would break the order.
            await self.websocket.send_text(control("error", detail="resume must come first"))
            return
        await self._send_history(resume.since, resume.epoch)

    async def _send_history(self, after: int, epoch: str | None) -> None:
        """Send this user's messages of the log after `after` in `epoch`; if the log no longer
        holds all that followed it (another epoch, trimmed, too old, beyond the head), tell the
        client to resync (reload by REST) and carry on from the log's head."""
        history = await self.live.log.read(epoch, after)
        if history.entries is None:
            await self.websocket.send_text(control("resync", epoch=history.epoch, seq=history.head))
        else:
            for entry in history.entries:
                if may_receive(self.user_id, entry.audience):
                    await self.websocket.send_text(message_text(entry.seq, entry.body))
                    self.sent_events += 1
        same_epoch = history.epoch == self.epoch
        self.epoch = history.epoch
        self.last_seq = max(self.last_seq, history.head) if same_epoch else history.head

    async def _watch_expiry(self) -> None:
        """Tell the client before its token expires; close at expiry unless it sent a fresh one."""
        notice = self.settings.WS_EXPIRY_NOTICE_SECONDS
        while True:
            self.reauthenticated.clear()
            if await self._reauthenticated_within(self.expires_at - notice - time.time()):
                continue
            self.offer(None, control("token_expiring", expires_at=int(self.expires_at)))
            if await self._reauthenticated_within(self.expires_at - time.time()):
                continue
            await self.close(BAD_CREDENTIALS, "token expired")
            return

    async def _reauthenticated_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(max(seconds, 0)):
                await self.reauthenticated.wait()
        except TimeoutError:
            return False
        return True


def server_connection(websocket: WebSocket) -> Any:
    """uvicorn's connection of this socket (its websockets-sansio protocol: `transport`,
    `conn`, `close_sent`), for the fast path; None under another server or protocol, whose
    sockets get every message through their writer."""
    protocol = getattr(websocket.scope.get(SERVER_SEND), "__self__", None)
    if all(hasattr(protocol, name) for name in ("transport", "conn", "close_sent")):
        return protocol
    return None


class ServerSend:
    """Keeps the server's own `send` of a WebSocket in its scope (SERVER_SEND), before the
    middlewares inside wrap it: the outermost middleware of the gateway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[SERVER_SEND] = send
        await self.app(scope, receive, send)


async def verify_token(websocket: WebSocket, token: str) -> Grant | None:
    verifier: TokenVerifier = websocket.app.state.token_verifier
    try:
        principal = await verifier.verify(token)
    except NotAuthenticated:
        return None
    return Grant(principal.user_id, principal.expires_at)


def resume_from_query(websocket: WebSocket) -> Resume | None:
    since = websocket.query_params.get("since")
    if since is None or not since.isdigit():
        return None
    return Resume(int(since), websocket.query_params.get("epoch"))


async def serve(websocket: WebSocket, token: str | None, subprotocol: str | None) -> None:
    """Check the handshake (origin, rate), authenticate, then run the socket."""
    live: LiveUpdates = websocket.app.state.live
    settings = live.settings
    origin = websocket.headers.get("origin")
    if (
        origin is not None
        and "*" not in settings.cors_origins
        and origin not in settings.cors_origins
    ):
        await websocket.send_denial_response(JSONResponse({"detail": "Origin not allowed"}, 403))
        return
    try:
        await websocket.app.state.rate_limiter.hit(
            parse(settings.WS_HANDSHAKE_RATE), "ws", client_ip(websocket)
        )
    except RateLimited as limited:
        await websocket.send_denial_response(
            JSONResponse({"detail": limited.detail}, 429, headers=limited.headers)
        )
        return
    try:
        grant = await _authenticate(websocket, token)
    except AppError:
        # Identity's keys are unavailable: not the client's fault.
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(UNAVAILABLE, "try again later")
        return
    await websocket.accept(subprotocol=subprotocol)
    if grant is None or grant.expires_at <= time.time():
        await websocket.close(BAD_CREDENTIALS, "invalid credentials")
        return
    socket = LiveSocket(websocket, grant, live)
    if not live.hub.join(socket):
        await websocket.close(TOO_MANY_SOCKETS, "too many sockets")
        return
    try:
        await socket.run(resume_from_query(websocket))
    except RedisError:
        logger.warning("live stream of user %s unavailable", grant.user_id, exc_info=True)
        await socket.close(UNAVAILABLE, "try again later")


async def _authenticate(websocket: WebSocket, token: str | None) -> Grant | None:
    if token is not None:
        return await verify_token(websocket, token)
    ticket = websocket.query_params.get("ticket")
    if ticket:
        return await websocket.app.state.live.tickets.redeem(ticket)
    return None


def bearer_subprotocol(websocket: WebSocket) -> str | None:
    """The token of `Sec-WebSocket-Protocol: bearer, <token>`, if that is what was offered."""
    offered = websocket.scope.get("subprotocols") or []
    if len(offered) == 2 and offered[0].lower() == "bearer":
        return offered[1]
    return None


router = APIRouter()


@router.websocket("/ws")
async def live_socket(websocket: WebSocket) -> None:
    token = bearer_subprotocol(websocket)
    await serve(websocket, token, "bearer" if token is not None else None)


@router.websocket("/ws/{token}")
async def live_socket_with_token_in_path(websocket: WebSocket, token: str) -> None:
    """The seed SPA's endpoint. The token is in the path, so no log line may show paths of
    this endpoint as they are (see RedactSocketCredentials)."""
    await serve(websocket, token, None)


_CREDENTIAL_IN_PATH = re.compile(r"(/ws/)[^\s\"?]+|([?&]ticket=)[^\s\"&]+")


class RedactSocketCredentials(logging.Filter):
    """uvicorn logs each WebSocket handshake with its path and query (`"WebSocket /ws/…"`,
    at INFO, whatever --no-access-log says): the token or ticket in them is replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                _CREDENTIAL_IN_PATH.sub(_redacted, arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def _redacted(match: re.Match[str]) -> str:
    return f"{match.group(1) or match.group(2)}[redacted]"


def redact_socket_credentials() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSocketCredentials) for f in target.filters):
            target.addFilter(RedactSocketCredentials())
