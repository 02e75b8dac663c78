"""Live updates: which events become which WebSocket messages, who gets each, and the hub that
numbers them in each user's stream and hands them to this replica's sockets.

Every replica subscribes on a queue of its own (so it sees every event) and holds any user's
sockets; a user's messages are numbered in their stream (gateway.streams), the same on every
replica. docs/live-updates.md is the client's view.
"""

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel
from redis.asyncio import BlockingConnectionPool, Redis

from gateway.settings import GatewaySettings
from gateway.streams import MemoryStreams, RedisStreams, UserStreams, message_text
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

# How often the users of open sockets are marked as still there (their streams kept).
TOUCH_SECONDS = 60.0
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


async def audience(event: EventEnvelope, data: dict[str, Any], hub: "Hub") -> list[uuid.UUID]:
    """Who may see the message: the one rule. A notification is its recipient's alone. Task,
    comment and file messages go to every user who may read the task, which today is every
    user of the workspace: here, every user with a live stream (a socket open within the
    history window), so one who reconnects finds what they missed. (This replica's own users
    are added: the shared list it reads may be a second old.)"""
    if event.type == NOTIFICATION_CREATED:
        return [uuid.UUID(data["user_id"])]
    return list({*await hub.streams.recent_users(), *hub.sockets})


@dataclass(eq=False)
class Hub:
    """This replica's sockets by user, and the delivery of events to them."""

    streams: UserStreams
    max_per_user: int
    sockets: dict[uuid.UUID, set["LiveSocket"]] = field(default_factory=lambda: defaultdict(set))
    # One event at a time, in the order the queue gave them, so seqs grow in that order.
    _order: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def count(self) -> int:
        return sum(len(sockets) for sockets in self.sockets.values())

    def join(self, socket: "LiveSocket") -> bool:
        """Register an open socket; False when its user has the most they may have."""
        sockets = self.sockets[socket.user_id]
        if len(sockets) >= self.max_per_user:
            if not sockets:
                del self.sockets[socket.user_id]
            return False
        sockets.add(socket)
        return True

    def leave(self, socket: "LiveSocket") -> None:
        sockets = self.sockets.get(socket.user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.sockets[socket.user_id]

    async def deliver(self, event: EventEnvelope) -> None:
        kind = MESSAGES[event.type]
        data = message_data(event)
        # Serialised once; each user's copy only gets its seq put in front.
        body = json.dumps({"type": kind.type, "id": str(event.id), "data": data})
        async with self._order:
            users = await audience(event, data, self)
            seqs = await self.streams.append(users, str(event.id), body)
        for user_id, seq in seqs.items():
            sockets = self.sockets.get(user_id)
            if sockets:
                text = message_text(seq, body)
                for socket in list(sockets):
                    socket.offer(seq, text)

    async def close_all(self, code: int, reason: str) -> None:
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
        self.streams: UserStreams = (
            RedisStreams(self.redis, settings.WS_HISTORY_MESSAGES, settings.WS_HISTORY_SECONDS)
            if self.redis is not None
            else MemoryStreams(settings.WS_HISTORY_MESSAGES, settings.WS_HISTORY_SECONDS)
        )
        self.tickets = TicketStore(self.redis, settings.WS_TICKET_SECONDS)
        self.hub = Hub(self.streams, settings.WS_MAX_PER_USER)

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


async def keep_streams(app: FastAPI) -> None:
    """Marks the users of open sockets as still there, so their streams are kept."""
    live: LiveUpdates = app.state.live
    while True:
        await asyncio.sleep(TOUCH_SECONDS)
        try:
            await live.streams.touch(list(live.hub.sockets))
        except Exception:
            logger.warning("could not keep the live streams of open sockets", exc_info=True)
