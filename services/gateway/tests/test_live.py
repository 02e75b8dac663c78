"""Live updates at the gateway: a real uvicorn server in this process, real WebSocket clients,
events published on the in-process bus as a producer's relay would, and each user's stream in
Redis or in memory (both are run)."""

import asyncio
import base64
import contextlib
import copy
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.live import MESSAGES
from taskhub_common.contracts import NOTIFICATION_CREATED, TASK_CREATED, TASK_UPDATED
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.local_bus import shared_bus
from taskhub_common.testing import RABBITMQ_URL, TcpProxy, bearer, eventually, new_user

from .conftest import random_ip

STREAMS = pytest.mark.parametrize("streams", ["redis", "memory"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_gateway(make_gateway):
    """A started gateway served by uvicorn on a free port: (app, ws:// base URL)."""

    @contextlib.asynccontextmanager
    async def started(streams: str = "redis", **overrides) -> AsyncIterator[tuple[FastAPI, str]]:
        if streams == "memory":
            overrides["REDIS_HOST"] = ""
        async with make_gateway(**overrides) as app:
            port = _free_port()
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:
                assert not serving.done(), "uvicorn did not start"
                await asyncio.sleep(0.01)
            try:
                yield app, f"ws://127.0.0.1:{port}"
            finally:
                server.should_exit = True
                await serving

    return started


@pytest.fixture
def make_user(identity):
    async def make() -> tuple[str, str]:
        response = await identity.post("/api/auth/register", json=new_user())
        assert response.status_code == 201, response.text
        body = response.json()
        return body["user"]["id"], body["access_token"]

    return make


def open_socket(url: str, token: str | None = None, **options: Any):
    """/ws with the token as the subprotocol `bearer, <token>` (or no credential)."""
    headers = {"X-Forwarded-For": options.pop("ip", None) or random_ip()}
    protocols = ["bearer", token] if token else None
    return connect(f"{url}/ws", subprotocols=protocols, additional_headers=headers, **options)


async def receive(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def receive_event(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    """The next message that is an event (skipping hello and other control messages)."""
    while True:
        message = await receive(ws, timeout)
        if "seq" in message:
            return message


async def close_code(ws: ClientConnection, timeout: float = 10) -> int:
    """Read until the server closes; its close code."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


def task_data(**fields: Any) -> dict[str, Any]:
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


async def publish(event_type: str, data: dict[str, Any]) -> EventEnvelope:
    envelope = EventEnvelope(type=event_type, producer="test", data=data)
    await shared_bus.publish(envelope, {})
    return envelope


def notification_data(user_id: str) -> dict[str, Any]:
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


# --- authentication


async def test_subprotocol_auth_echoes_bearer_and_says_hello(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with live_gateway() as (app, url), open_socket(url, token) as ws:
        hello = await receive(ws)
        assert ws.subprotocol == "bearer"
        assert hello["type"] == "hello"
        assert set(hello["data"]) == {"epoch", "seq"}
        await eventually(_sockets(app, 1), "the socket is counted")


def _sockets(app: FastAPI, count: int):
    async def check() -> bool:
        return app.state.live.hub.count == count

    return check


@pytest.mark.parametrize("credential", ["garbage", "", None])
async def test_bad_tokens_are_closed_with_4001(live_gateway, credential) -> None:
    async with live_gateway() as (_, url):
        headers = {"X-Forwarded-For": random_ip()}
        if credential is None:
            target, protocols = f"{url}/ws", None
        else:
            target, protocols = f"{url}/ws", ["bearer", credential or "x"]
        async with connect(target, subprotocols=protocols, additional_headers=headers) as ws:
            assert await close_code(ws) == 4001
        async with connect(f"{url}/ws/not-a-token", additional_headers=headers) as ws:
            assert await close_code(ws) == 4001


async def test_token_in_path_works_and_never_reaches_a_log_line(
    live_gateway, make_user, capfd
) -> None:
    _, token = await make_user()
    capfd.readouterr()
    async with live_gateway() as (_, url):
        headers = {"X-Forwarded-For": random_ip()}
        async with connect(f"{url}/ws/{token}", additional_headers=headers) as ws:
            assert (await receive(ws))["type"] == "hello"
        async with connect(f"{url}/ws/{token}x", additional_headers=headers) as ws:
            assert await close_code(ws) == 4001
    logged = capfd.readouterr().err
    handshakes = [line for line in logged.splitlines() if "WebSocket /ws" in line]
    assert len(handshakes) == 2, "uvicorn logs handshakes; the test would prove nothing otherwise"
    assert all("/ws/[redacted]" in line for line in handshakes)
    assert token not in logged


async def test_tickets_are_single_use(live_gateway, make_user, client_for) -> None:
    _, token = await make_user()
    async with live_gateway() as (app, url), client_for(app) as client:
        anonymous = await client.post("/api/auth/ws-ticket")
        response = await client.post("/api/auth/ws-ticket", headers=bearer(token))
        assert anonymous.status_code == 401
        assert response.status_code == 200
        body = response.json()
        assert body["expires_in"] == 30
        ticket_url = f"{url}/ws?ticket={body['ticket']}"
        async with connect(ticket_url) as ws:
            assert (await receive(ws))["type"] == "hello"
        async with connect(ticket_url) as reused:
            assert await close_code(reused) == 4001
        async with connect(f"{url}/ws?ticket=made-up") as forged:
            assert await close_code(forged) == 4001


@STREAMS
async def test_expired_tickets_are_refused(live_gateway, make_user, client_for, streams) -> None:
    _, token = await make_user()
    async with live_gateway(streams, WS_TICKET_SECONDS=1) as (app, url), client_for(app) as client:
        ticket = (await client.post("/api/auth/ws-ticket", headers=bearer(token))).json()["ticket"]
        await asyncio.sleep(1.5)
        async with connect(f"{url}/ws?ticket={ticket}") as ws:
            assert await close_code(ws) == 4001


async def test_foreign_origins_are_refused_at_the_handshake(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with live_gateway(CORS_ORIGINS="https://app.example") as (_, url):
        async with open_socket(url, token, origin="https://app.example") as ws:
            assert (await receive(ws))["type"] == "hello"
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, token, origin="https://evil.example"):
                pass
    assert refused.value.response.status_code == 403


def short_token(identity_app: FastAPI, user_id: str, seconds: float) -> str:
    """An access token signed by identity that expires in `seconds` (identity's own lifetime
    is in minutes)."""
    key_ring = copy.copy(identity_app.state.key_ring)
    key_ring.settings = key_ring.settings.model_copy(
        update={"ACCESS_TOKEN_EXPIRE_MINUTES": seconds / 60}
    )
    return key_ring.issue_access_token(uuid.UUID(user_id), jti=uuid.uuid4().hex)[0]


async def test_expiring_token_is_announced_and_renewed_in_band(
    live_gateway, make_user, identity_app
) -> None:
    user_id, token = await make_user()
    async with live_gateway(WS_EXPIRY_NOTICE_SECONDS=2) as (_, url):
        async with open_socket(url, short_token(identity_app, user_id, 3)) as ws:
            assert (await receive(ws))["type"] == "hello"
            assert (await receive(ws))["type"] == "token_expiring"
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert (await receive(ws))["type"] == "auth_ok"
            await asyncio.sleep(3)  # past the first token's expiry: still open
            await ws.send(json.dumps({"type": "ping"}))
            assert (await receive(ws))["type"] == "pong"
        # Without a fresh token, the socket is closed at expiry.
        async with open_socket(url, short_token(identity_app, user_id, 2)) as ws:
            started = time.monotonic()
            assert await close_code(ws) == 4001
            assert time.monotonic() - started > 1
        # A token of someone else does not renew it.
        _, other_token = await make_user()
        async with open_socket(url, short_token(identity_app, user_id, 30)) as ws:
            await ws.send(json.dumps({"type": "auth", "token": other_token}))
            assert await close_code(ws) == 4001


# --- delivery


@STREAMS
async def test_task_events_reach_every_user_notifications_only_their_recipient(
    live_gateway, make_user, streams
) -> None:
    (alice, alice_token), (_, bob_token) = await make_user(), await make_user()
    async with (
        live_gateway(streams) as (_, url),
        open_socket(url, alice_token) as alice_ws,
        open_socket(url, bob_token) as bob_ws,
    ):
        await receive(alice_ws), await receive(bob_ws)
        note = await publish(NOTIFICATION_CREATED, notification_data(alice))
        task = await publish(TASK_CREATED, task_data(title="shared"))

        to_alice = [await receive_event(alice_ws), await receive_event(alice_ws)]
        to_bob = await receive_event(bob_ws)

    assert [m["type"] for m in to_alice] == ["notification", "task_created"]
    assert to_alice[0]["id"] == str(note.id)
    assert to_alice[0]["data"]["user_id"] == alice
    assert to_alice[1]["seq"] == to_alice[0]["seq"] + 1
    # Bob's first event is the task: the notification was never his.
    assert to_bob["type"] == "task_created"
    assert to_bob["id"] == str(task.id)
    assert to_bob["data"]["task_id"] == task.data["id"] == to_bob["data"]["id"]
    assert set(to_bob) == {"type", "id", "seq", "data"}


async def test_every_event_type_has_its_message(live_gateway, make_user) -> None:
    """The table maps all the events the gateway subscribes to; emails never pass."""
    _, token = await make_user()
    creator = {
        "id": str(uuid.uuid4()),
        "email": None,
        "username": "ada",
        "full_name": "Ada",
        "avatar_url": None,
        "is_active": True,
        "created_at": datetime.now(UTC).isoformat(),
    }
    async with live_gateway() as (_, url), open_socket(url, token) as ws:
        await receive(ws)
        await publish(TASK_UPDATED, task_data(creator=creator, changes={"title": "new"}))
        message = await receive_event(ws)
        # A producer that leaked an email would fail the contract: nothing is sent.
        await publish(TASK_UPDATED, task_data(creator={**creator, "email": "ada@example.com"}))
        await publish(TASK_CREATED, task_data(title="after"))
        after = await receive_event(ws)
    assert message["type"] == "task_updated"
    assert message["data"]["creator"]["email"] is None
    assert message["data"]["changes"] == {"title": "new"}
    assert after["data"]["title"] == "after"
    assert after["seq"] == message["seq"] + 1
    assert {kind.type for kind in MESSAGES.values()} == {
        "task_created",
        "task_updated",
        "task_deleted",
        "comment_added",
        "comment_updated",
        "comment_deleted",
        "file_uploaded",
        "file_deleted",
        "notification",
    }


# --- resume


@STREAMS
async def test_resume_delivers_exactly_the_missed_messages(
    live_gateway, make_user, streams
) -> None:
    _, token = await make_user()
    async with live_gateway(streams) as (_, url):
        async with open_socket(url, token) as ws:
            hello = await receive(ws)
            await publish(TASK_CREATED, task_data(title="seen"))
            seen = await receive_event(ws)
        missed = [await publish(TASK_CREATED, task_data(title=f"missed {i}")) for i in range(3)]
        query = f"?since={seen['seq']}&epoch={hello['data']['epoch']}"
        async with connect(f"{url}/ws{query}", subprotocols=["bearer", token]) as ws:
            assert (await receive(ws))["type"] == "hello"
            replayed = [await receive_event(ws) for _ in missed]
            await publish(TASK_CREATED, task_data(title="live"))
            live = await receive_event(ws)
        # The same, asked for in a first message.
        async with open_socket(url, token) as ws:
            await receive(ws)
            resume = {"type": "resume", "since": seen["seq"], "epoch": hello["data"]["epoch"]}
            await ws.send(json.dumps(resume))
            again = [await receive_event(ws) for _ in range(4)]
    assert [m["id"] for m in replayed] == [str(e.id) for e in missed]
    assert [m["seq"] for m in replayed] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 3]
    assert live["seq"] == seen["seq"] + 4
    assert [m["seq"] for m in again] == [seen["seq"] + i for i in range(1, 5)]


@STREAMS
async def test_a_gap_too_old_or_another_epoch_gets_resync(live_gateway, make_user, streams) -> None:
    _, token = await make_user()
    async with live_gateway(streams, WS_HISTORY_MESSAGES=2) as (_, url):
        async with open_socket(url, token) as ws:
            hello = await receive(ws)
            for i in range(4):
                await publish(TASK_CREATED, task_data(title=f"t{i}"))
            [await receive_event(ws) for _ in range(4)]
        epoch, since = hello["data"]["epoch"], hello["data"]["seq"]
        for query in (f"since={since}&epoch={epoch}", f"since={since}&epoch=other"):
            async with connect(f"{url}/ws?{query}", subprotocols=["bearer", token]) as ws:
                await receive(ws)
                resync = await receive(ws)
                assert resync["type"] == "resync"
                assert resync["data"] == {"epoch": epoch, "seq": since + 4}
                await publish(TASK_CREATED, task_data(title="next"))
                assert (await receive_event(ws))["seq"] == resync["data"]["seq"] + 1
                since += 1  # the next round asks after the head moved


async def test_two_replicas_number_a_users_messages_alike(live_gateway, make_user) -> None:
    """Two gateways on one Redis, each with its own queue: a user's sockets on both get each
    event once, with the same seq (the first replica to append it numbers it)."""
    _, token = await make_user()
    async with (
        live_gateway() as (_, first),
        live_gateway() as (_, second),
        open_socket(first, token) as one,
        open_socket(second, token) as two,
    ):
        await receive(one), await receive(two)
        events = [await publish(TASK_CREATED, task_data(title=f"t{i}")) for i in range(5)]
        on_one = [await receive_event(one) for _ in events]
        on_two = [await receive_event(two) for _ in events]
    assert [m["id"] for m in on_one] == [m["id"] for m in on_two] == [str(e.id) for e in events]
    assert [m["seq"] for m in on_one] == [m["seq"] for m in on_two]
    assert [m["seq"] for m in on_one] == list(range(on_one[0]["seq"], on_one[0]["seq"] + 5))


# --- limits


async def stalled_client(url: str, token: str) -> tuple[asyncio.StreamReader, Any]:
    """A WebSocket client that completes the handshake, then reads nothing more: a small
    receive buffer, and a stream reader that stops taking bytes past a few KiB."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = url.removeprefix("ws://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: bearer, {token}\r\nX-Forwarded-For: {random_ip()}\r\n\r\n"
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


async def test_a_client_that_stops_reading_is_closed_others_keep_receiving(
    live_gateway, make_user
) -> None:
    (_, slow_token), (_, fast_token) = await make_user(), await make_user()
    # Streams in memory: 10 MB of events need not go to the shared Redis.
    async with live_gateway("memory", WS_SEND_QUEUE=32) as (app, url):
        reader, writer = await stalled_client(url, slow_token)
        async with open_socket(url, fast_token) as fast:
            await receive(fast)
            await eventually(_sockets(app, 2), "both sockets are open")
            big = "x" * 50_000
            events, received = [], []
            for _ in range(200):
                events.append(await publish(TASK_CREATED, task_data(description=big)))
                # A pace the reading client keeps up with on a busy machine.
                received.append(await receive_event(fast))
            assert [m["id"] for m in received] == [str(e.id) for e in events]
            await eventually(_sockets(app, 1), "the slow socket is dropped")
            # Once it reads again, it finds the close frame after what had been sent.
            async with asyncio.timeout(30):
                stream = await reader.read()
            writer.close()
    assert close_frame_code(stream) == 1013


async def test_sockets_per_user_are_limited(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with live_gateway(WS_MAX_PER_USER=2) as (_, url):
        async with open_socket(url, token) as a, open_socket(url, token) as b:
            await receive(a), await receive(b)
            async with open_socket(url, token) as third:
                assert await close_code(third) == 4008
        async with open_socket(url, token) as again:
            assert (await receive(again))["type"] == "hello"


async def test_handshakes_are_rate_limited_per_ip(live_gateway, make_user) -> None:
    _, token = await make_user()
    ip = random_ip()
    async with live_gateway(WS_HANDSHAKE_RATE="2/minute") as (_, url):
        for _ in range(2):
            async with open_socket(url, token, ip=ip) as ws:
                await receive(ws)
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, token, ip=ip):
                pass
        async with open_socket(url, token) as other_ip:
            assert (await receive(other_ip))["type"] == "hello"
    assert refused.value.response.status_code == 429


async def test_client_messages_are_size_limited(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with live_gateway(WS_MAX_MESSAGE_BYTES=100) as (_, url), open_socket(url, token) as ws:
        await receive(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
        await ws.send(json.dumps({"type": "ping", "padding": "x" * 200}))
        assert await close_code(ws) == 1009


async def test_health_counts_open_sockets(live_gateway, make_user, client_for) -> None:
    _, token = await make_user()
    async with live_gateway() as (app, url), client_for(app) as client:
        async with open_socket(url, token) as ws:
            await receive(ws)
            live = (await client.get("/api/health")).json()["live"]
        after = (await client.get("/api/health")).json()["live"]
    assert live == {"sockets": 1, "events": "ok"}
    assert after["sockets"] == 0


async def test_readiness_fails_while_the_event_subscription_is_down(
    live_gateway, make_user, client_for
) -> None:
    """RabbitMQ reached through a proxy the test cuts: the replica says it is not ready (and
    /api/health says its events are down) until the connection, and its queue, are back."""
    proxy = TcpProxy(5672)
    proxy.start()
    url = urlsplit(RABBITMQ_URL)
    through = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}")
    recipient, token = await make_user()
    async with (
        live_gateway(RABBITMQ_URL=through.geturl()) as (app, ws_base),
        client_for(app) as client,
    ):

        def events(state: str):
            async def check() -> bool:
                ready = await client.get("/health/ready")
                live = (await client.get("/api/health")).json()["live"]
                return live["events"] == state and (ready.status_code == 200) == (state == "ok")

            return check

        await eventually(events("ok"), "the subscription is up", timeout=60)
        proxy.stop()
        await eventually(events("down"), "the replica is not ready", timeout=60)
        proxy.start()
        await eventually(events("ok"), "the subscription is back", timeout=60)
        async with open_socket(ws_base, token) as ws:
            await receive(ws)
            # The queue is declared again just after the connection: what is published before
            # that is not this replica's (no retries on a live queue), so publish until one is.
            published: set[str] = set()
            received = None
            async with asyncio.timeout(60):
                while received is None:
                    note = notification_data(recipient)
                    published.add(str((await publish_on_rabbitmq(NOTIFICATION_CREATED, note)).id))
                    with contextlib.suppress(TimeoutError):
                        received = await receive_event(ws, timeout=1)
    proxy.stop()
    assert received["id"] in published


async def publish_on_rabbitmq(event_type: str, data: dict[str, Any]) -> EventEnvelope:
    envelope = EventEnvelope(type=event_type, producer="test", data=data)
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await exchange.publish(
            aio_pika.Message(envelope.model_dump_json().encode()), routing_key=envelope.type
        )
    return envelope
