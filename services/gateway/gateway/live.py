"""Live updates: which events become which WebSocket messages, who may see each, and the hub
that numbers them in the live log and hands them to this replica's sockets.

Every replica subscribes on a queue of its own (so it sees every event) and holds any user's
sockets; messages are numbered in one log (gateway.streams), the same on every replica.
docs/live-updates.md is the client's view.
"""

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel
from redis.asyncio import BlockingConnectionPool, Redis
from websockets.frames import Frame, Opcode

from gateway.settings import GatewaySettings
from gateway.streams import (
    Entry,
    LiveLog,
    MemoryLog,
    Message,
    RedisLog,
    log_namespace,
    message_text,
)
from gateway.tickets import TicketStore
from taskhub_common.contracts import (
    COMMENT_CREATED,
    COMMENT_DELETED,
    COMMENT_UPDATED,
    FILE_DELETED,
    FILE_UPLOADED,
    NOTIFICATION_CREATED,
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_OVERDUE,
    TASK_UPDATED,
    CommentData,
    FileData,
    NotificationData,
    TaskData,
)
from taskhub_common.events import EventEnvelope

if TYPE_CHECKING:
    from gateway.sockets import LiveSocket

logger = logging.getLogger(__name__)

# How often a replica with open sockets keeps the log from expiring.
KEEP_SECONDS = 60.0
# The in-process bus is this process's alone, and so is the log of its events.
PROCESS_ID = uuid.uuid4().hex
REDIS_CONNECTIONS = 32


@dataclass(frozen=True)
class MessageKind:
    """One event type's message: its `type`, the contract `data` is read with, and the fields
    that are for services only (whom to tell), not for clients."""

    type: str
    contract: type[BaseModel]
    internal: frozenset[str] = frozenset()


_TASK_PEOPLE = frozenset({"task_creator_id", "task_assignee_id"})

# Event type -> message. Assigning, completing and the overdue sweep are updates to a client.
MESSAGES: dict[str, MessageKind] = {
    TASK_CREATED: MessageKind("task_created", TaskData),
    TASK_UPDATED: MessageKind("task_updated", TaskData),
    TASK_ASSIGNED: MessageKind("task_updated", TaskData),
    TASK_COMPLETED: MessageKind("task_updated", TaskData),
    TASK_OVERDUE: MessageKind("task_updated", TaskData),
    TASK_DELETED: MessageKind("task_deleted", TaskData),
    COMMENT_CREATED: MessageKind("comment_added", CommentData, _TASK_PEOPLE),
    COMMENT_UPDATED: MessageKind("comment_updated", CommentData, _TASK_PEOPLE),
    COMMENT_DELETED: MessageKind("comment_deleted", CommentData, _TASK_PEOPLE),
    FILE_UPLOADED: MessageKind("file_uploaded", FileData, _TASK_PEOPLE),
    FILE_DELETED: MessageKind("file_deleted", FileData, _TASK_PEOPLE),
    NOTIFICATION_CREATED: MessageKind("notification", NotificationData),
}


def message_data(event: EventEnvelope) -> dict[str, Any]:
    """`data` of the event's message: read with its contract (so nothing beyond it, and no
    email, can pass: a user summary's email is always null), minus the internal fields. Task
    messages carry `task_id` as well, like comment and file ones."""
    kind = MESSAGES[event.type]
    data = kind.contract.model_validate(event.data).model_dump(mode="json", exclude=kind.internal)
    if kind.contract is TaskData:
        data["task_id"] = data["id"]
    return data


def audience(event_type: str, data: dict[str, Any]) -> str:
    """Whom the message concerns, as kept beside it in the log: `user:<id>` for a
    notification (its recipient), `task:<id>` for a task, comment or file message."""
    if event_type == NOTIFICATION_CREATED:
        return f"user:{data['user_id']}"
    return f"task:{data['task_id']}"


def may_receive(user_id: uuid.UUID, audience: str) -> bool:
    """Who may see a message: the one rule, for live delivery and for resuming alike. A
    notification is its recipient's alone; a task, comment or file message goes to every user
    who may read the task, which today is every user of the workspace."""
    kind, _, subject = audience.partition(":")
    return kind == "task" or subject == str(user_id)


def _message(event: EventEnvelope) -> Message:
    kind = MESSAGES[event.type]
    data = message_data(event)
    # Serialised once; each socket's copy only gets the seq put in front.
    body = json.dumps({"type": kind.type, "id": str(event.id), "data": data})
    return Message(str(event.id), event.occurred_at.timestamp(), audience(event.type, data), body)


def text_frame(text: str) -> bytes:
    """The WebSocket frame of a message as a server sends it (unmasked, uncompressed): the same
    bytes for every socket, so built once per message, not once per socket."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


@dataclass(frozen=True)
class Outgoing:
    """Messages for a socket, in seq order: (seq, text) each, and all their frames in one
    buffer, built once for every user who may see the same ones."""

    messages: list[tuple[int, str]]
    frames: bytes


@dataclass(eq=False)
class Hub:
    """This replica's sockets by user, and the delivery of the log's messages to them, in seq
    order and each once."""

    log: LiveLog
    max_per_user: int
    # At most one write per socket this often (decision 0076): messages numbered meanwhile go
    # out together at its end; the first after a quiet spell goes at once.
    flush_seconds: float = 0.0
    sockets: dict[uuid.UUID, set["LiveSocket"]] = field(default_factory=lambda: defaultdict(set))
    # The log's epoch, and the seq up to which every message has been handed to the sockets
    # here (or waits in `_unflushed` for the next flush, which sends them before anything else).
    epoch: str | None = None
    delivered: int = 0
    # The latest time an event this replica appended occurred: if the log starts again, the
    # events up to it may have been numbered in the old epoch (decision 0076).
    reached: float = 0.0
    # Events waiting to be numbered: whoever holds the lock next numbers all of them at once.
    _pending: list[Message] = field(default_factory=list)
    _order: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Numbered messages not yet written, in seq order; when the last flush was; the next one.
    _unflushed: list[Entry] = field(default_factory=list)
    _flushed_at: float = float("-inf")
    _flush_timer: asyncio.TimerHandle | None = None

    @property
    def count(self) -> int:
        return sum(len(sockets) for sockets in self.sockets.values())

    def join(self, socket: "LiveSocket") -> bool:
        """Register a socket; False when its user has the most they may have."""
        sockets = self.sockets[socket.user_id]
        if len(sockets) >= self.max_per_user:
            if not sockets:
                del self.sockets[socket.user_id]
            return False
        sockets.add(socket)
        return True

    async def start_point(self) -> tuple[str, int]:
        """Where a socket that just joined starts: the seq up to which this replica has
        delivered, since every later one will reach it (no Redis call per handshake). The
        first socket here asks the log for its head."""
        if self.epoch is None:
            epoch, head = await self.log.open()
            if self.epoch is None:
                self.epoch, self.delivered = epoch, head
        return self.epoch, self.delivered

    def leave(self, socket: "LiveSocket") -> None:
        sockets = self.sockets.get(socket.user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.sockets[socket.user_id]

    async def deliver(self, *events: EventEnvelope) -> None:
        """Number events, in order, and hand them to the sockets. Every event is read before
        any is kept: one the contract refuses fails the call, and the bus hands the others
        over again one at a time."""
        self._pending.extend([_message(event) for event in events])
        async with self._order:
            batch, self._pending = self._pending, []
            if batch:
                await self._number_and_offer(batch)

    async def _number_and_offer(self, batch: list[Message]) -> None:
        epoch, seqs = await self.log.append(batch, self.epoch, self.reached)
        self.reached = max(self.reached, *(m.occurred_at for m in batch))
        numbered = {seq: m for seq, m in zip(seqs, batch, strict=True) if seq is not None}
        refused = [m for seq, m in zip(seqs, batch, strict=True) if seq is None]
        if epoch != self.epoch:
            if self.epoch is not None:
                # The log started again (Redis lost it): the sockets start again with it.
                self.flush()
                self._offer_all(lambda socket: socket.resync(epoch, 0))
                self.delivered = 0
            elif numbered:
                self.delivered = min(numbered) - 1
            self.epoch = epoch
        fresh = {seq: m for seq, m in numbered.items() if seq > self.delivered}
        if fresh:
            await self._offer_fresh(epoch, fresh)
        if refused:
            self.flush()
        for message in refused:
            # Older than what the log remembers (this replica lags, or the event was long on
            # its way): perhaps numbered and sent already, so not numbered again; whoever may
            # see it reloads instead.
            for socket in self._audience(message.audience):
                socket.resync(epoch, self.delivered, force=True)

    async def _offer_fresh(self, epoch: str, fresh: dict[int, Message]) -> None:
        last = max(fresh)
        entries = [Entry(seq, fresh[seq].audience, fresh[seq].body) for seq in sorted(fresh)]
        if len(fresh) < last - self.delivered and self.sockets:
            # Seqs other replicas gave first, whose events this one has not received yet (or
            # never will: its queue was down). The log has them.
            history = await self.log.read(epoch, self.delivered, last)
            if history.entries is None:
                self.flush()
                self._offer_all(lambda socket: socket.resync(history.epoch, last))
                self.delivered = last
                return
            entries = history.entries
        self._offer(entries)
        self.delivered = last

    def _offer(self, entries: list[Entry]) -> None:
        """Hand numbered messages to the sockets: at once if no flush happened within
        `flush_seconds`, otherwise with whatever else is numbered until the next flush."""
        self._unflushed.extend(entries)
        if self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._flushed_at + self.flush_seconds - loop.time()
        if wait > 0:
            self._flush_timer = loop.call_later(wait, self.flush)
        else:
            self.flush()

    def flush(self) -> None:
        """Write the messages numbered since the last flush. Each is encoded once; each user's
        share of them joined once (users who may see the same messages share it), so a socket
        costs one write per flush, not per message. Called before any resync is offered, which
        must follow the messages numbered before it."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        entries, self._unflushed = self._unflushed, []
        if not entries:
            return
        texts = [message_text(entry.seq, entry.body) for entry in entries]
        frames = [text_frame(text) for text in texts]
        shares: dict[tuple[int, ...], Outgoing] = {}
        for user_id, sockets in list(self.sockets.items()):
            mine = tuple(
                i for i, entry in enumerate(entries) if may_receive(user_id, entry.audience)
            )
            if not mine:
                continue
            share = shares.get(mine)
            if share is None:
                messages = [(entries[i].seq, texts[i]) for i in mine]
                share = shares[mine] = Outgoing(messages, b"".join(frames[i] for i in mine))
            for socket in list(sockets):
                socket.offer_events(share)
        # The wait runs from the end of a flush: writing to many sockets takes a while.
        self._flushed_at = asyncio.get_running_loop().time()

    def _audience(self, audience: str) -> Iterator["LiveSocket"]:
        """The sockets here whose user may see a message of this audience."""
        for user_id, sockets in list(self.sockets.items()):
            if may_receive(user_id, audience):
                yield from list(sockets)

    def _offer_all(self, offer: Callable[["LiveSocket"], None]) -> None:
        for sockets in list(self.sockets.values()):
            for socket in list(sockets):
                offer(socket)

    async def close_all(self, code: int, reason: str) -> None:
        self.flush()
        sockets = [socket for group in self.sockets.values() for socket in group]
        await asyncio.gather(*(socket.close(code, reason) for socket in sockets))


class LiveUpdates:
    """The gateway's live-update parts, made with the app: streams, tickets and the hub."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.redis = (
            # Blocking: a burst of handshakes waits for a connection instead of failing.
            Redis(
                connection_pool=BlockingConnectionPool.from_url(
                    settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=5
                )
            )
            if settings.redis_url
            else None
        )
        history = (settings.WS_HISTORY_MESSAGES, settings.WS_HISTORY_SECONDS)
        self.log: LiveLog = (
            RedisLog(self.redis, log_namespace(settings.RABBITMQ_URL, PROCESS_ID), *history)
            if self.redis is not None
            else MemoryLog(*history)
        )
        self.tickets = TicketStore(self.redis, settings.WS_TICKET_SECONDS)
        self.hub = Hub(self.log, settings.WS_MAX_PER_USER, settings.WS_FLUSH_MS / 1000)

    def status(self, app: FastAPI) -> dict[str, Any]:
        """Open sockets, and whether this replica still receives events."""
        return {
            "sockets": self.hub.count,
            "events": "ok" if app.state.bus.is_ready() else "down",
        }

    async def shutdown(self, app: FastAPI) -> None:
        # uvicorn has closed the sockets it serves (1012) by now; any left go the same way.
        await self.hub.close_all(1012, "server restarting")
        if self.redis is not None:
            await self.redis.aclose()


async def keep_log(app: FastAPI) -> None:
    """Keeps the log while this replica has sockets open: a quiet day must not end their
    epoch (and force them to resync) under them."""
    live: LiveUpdates = app.state.live
    while True:
        await asyncio.sleep(KEEP_SECONDS)
        if not live.hub.sockets:
            continue
        try:
            await live.log.keep()
        except Exception:
            logger.warning("could not keep the live log of open sockets", exc_info=True)
