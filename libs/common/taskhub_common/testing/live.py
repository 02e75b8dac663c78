"""WebSocket clients of the gateway's live updates, for its tests, the end-to-end suite and
bench/live: open a socket, read messages and close codes, stall a client, publish an event on
RabbitMQ as a service's relay would."""

import asyncio
import base64
import contextlib
import copy
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.testing import RABBITMQ_URL

# How long a test waits for a message: a loaded machine fans out slowly.
RECEIVE_TIMEOUT = 10.0


def open_socket(
    base: str, token: str | None, client_ip: str, path: str = "/ws", **options: Any
) -> connect:
    """A socket on `base` (ws://host:port) with the token as the subprotocol `bearer, <token>`
    (none: no credential, or one in `path`), from `client_ip` (X-Forwarded-For)."""
    return connect(
        f"{base}{path}",
        subprotocols=["bearer", token] if token else None,
        additional_headers={"X-Forwarded-For": client_ip},
        **options,
    )


async def receive(ws: ClientConnection, timeout: float = RECEIVE_TIMEOUT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def receive_event(ws: ClientConnection, timeout: float = RECEIVE_TIMEOUT) -> dict[str, Any]:
    """The next message that is an event (hello and other control messages skipped)."""
    while True:
        message = await receive(ws, timeout)
        if "seq" in message:
            return message


async def close_code(ws: ClientConnection, timeout: float = RECEIVE_TIMEOUT) -> int:
    """Read until the server closes; its close code."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


async def stalled_client(
    base: str, token: str, client_ip: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client that completes the handshake, then reads nothing more: a small
    receive buffer, and a stream reader that stops taking bytes past a few KiB."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = base.removeprefix("ws://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: bearer, {token}\r\nX-Forwarded-For: {client_ip}\r\n\r\n"
        ).encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


def close_frame_code(stream: bytes) -> int | None:
    """The code of the close frame in what a server sent (frames unmasked), if any."""
    at = 0
    while at + 2 <= len(stream):
        opcode, length = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if length in (126, 127):
            size = 2 if length == 126 else 8
            length = int.from_bytes(stream[at : at + size], "big")
            at += size
        if opcode == 0x8:
            return int.from_bytes(stream[at : at + 2], "big")
        at += length
    return None


def short_access_token(key_ring: Any, user_id: str, seconds: float) -> str:
    """An access token signed with identity's key ring (`identity.keys.KeyRing`) that expires
    in `seconds`: identity's own lifetime is in whole minutes."""
    short = copy.copy(key_ring)
    short.settings = key_ring.settings.model_copy(
        update={"ACCESS_TOKEN_EXPIRE_MINUTES": seconds / 60}
    )
    return short.issue_access_token(uuid.UUID(user_id), jti=uuid.uuid4().hex)[0]


def task_data(**fields: Any) -> dict[str, Any]:
    """The data of a task event (task.created and the like), as the tasks service sends it."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(uuid.uuid4()),
        "title": "a task",
        "description": None,
        "status": "todo",
        "priority": "medium",
        "start_date": None,
        "due_date": None,
        "completed_at": None,
        "notify_overdue": True,
        "is_deleted": False,
        "created_by": str(uuid.uuid4()),
        "assigned_to": None,
        "creator": None,
        "assignee": None,
        "tags": [],
        "created_at": now,
        "updated_at": now,
        **fields,
    }


def notification_data(user_id: str) -> dict[str, Any]:
    """The data of a notification.created event for `user_id`, as the notifier sends it."""
    return {
        "id": str(uuid.uuid4()),
        "user_id": user_id,
        "task_id": str(uuid.uuid4()),
        "type": "task_assigned",
        "title": "Assigned",
        "message": "You were assigned a task",
        "is_read": False,
        "created_at": datetime.now(UTC).isoformat(),
    }


@contextlib.asynccontextmanager
async def rabbitmq_exchange() -> AsyncIterator[AbstractExchange]:
    """The services' exchange on RabbitMQ, to publish on as their outbox relays do."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        yield await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)


async def publish_on(exchange: AbstractExchange, event: EventEnvelope) -> None:
    message = aio_pika.Message(event.model_dump_json().encode())
    await exchange.publish(message, routing_key=event.type)


async def publish_on_rabbitmq(event: EventEnvelope) -> EventEnvelope:
    async with rabbitmq_exchange() as exchange:
        await publish_on(exchange, event)
    return event
