"""Live updates at the gateway: a real uvicorn server in this process, real WebSocket clients,
events published on the in-process bus as a producer's relay would, and the live log in Redis
or in memory (both are run)."""

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.live import MESSAGES
from gateway.settings import GatewaySettings
from gateway.streams import MemoryLog, Message, RedisLog
from taskhub_common.contracts import NOTIFICATION_CREATED, TASK_CREATED, TASK_UPDATED
from taskhub_common.events import EventEnvelope
from taskhub_common.local_bus import shared_bus
from taskhub_common.testing import RABBITMQ_URL, REDIS_HOST, TcpProxy, bearer, eventually, new_user
from taskhub_common.testing.live import (
    close_code,
    close_frame_code,
    notification_data,
    open_socket,
    publish_on_rabbitmq,
    receive,
    receive_event,
    short_access_token,
    stalled_client,
    task_data,
)

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


@contextlib.asynccontextmanager
async def a_socket_on_each_of_two_replicas(
    live_gateway, tokens: tuple[str, str], **overrides
) -> AsyncIterator[tuple[tuple[FastAPI, str, Any], tuple[FastAPI, str, Any]]]:
    """Two gateways on one Redis, each with its own queue, and a socket on each (the first
    with tokens[0], the second with tokens[1]): (app, url, socket) of each."""
    async with (
        live_gateway(**overrides) as (first_app, first),
        live_gateway(**overrides) as (second_app, second),
        open_socket(first, tokens[0], random_ip()) as one,
        open_socket(second, tokens[1], random_ip()) as two,
    ):
        yield (first_app, first, one), (second_app, second, two)


async def publish(event_type: str, data: dict[str, Any]) -> EventEnvelope:
    envelope = EventEnvelope(type=event_type, producer="test", data=data)
    await shared_bus.publish(envelope, {})
    return envelope


# --- authentication


async def test_subprotocol_auth_echoes_bearer_and_says_hello(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with live_gateway() as (app, url), open_socket(url, token, random_ip()) as ws:
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
        async with open_socket(url, token, random_ip(), origin="https://app.example") as ws:
            assert (await receive(ws))["type"] == "hello"
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, token, random_ip(), origin="https://evil.example"):
                pass
    assert refused.value.response.status_code == 403


async def test_expiring_token_is_announced_and_renewed_in_band(
    live_gateway, make_user, identity_app
) -> None:
    user_id, token = await make_user()
    key_ring = identity_app.state.key_ring
    async with live_gateway(WS_EXPIRY_NOTICE_SECONDS=2) as (_, url):
        async with open_socket(url, short_access_token(key_ring, user_id, 3), random_ip()) as ws:
            assert (await receive(ws))["type"] == "hello"
            assert (await receive(ws))["type"] == "token_expiring"
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert (await receive(ws))["type"] == "auth_ok"
            await asyncio.sleep(3)  # past the first token's expiry: still open
            await ws.send(json.dumps({"type": "ping"}))
            assert (await receive(ws))["type"] == "pong"
        # Without a fresh token, the socket is closed at expiry (`exp` is in whole seconds).
        issued = time.time()
        async with open_socket(url, short_access_token(key_ring, user_id, 3), random_ip()) as ws:
            assert (await receive(ws))["type"] == "hello"
            assert await close_code(ws) == 4001
            assert time.time() >= issued + 2
        # A token of someone else does not renew it.
        _, other_token = await make_user()
        async with open_socket(url, short_access_token(key_ring, user_id, 30), random_ip()) as ws:
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
        open_socket(url, alice_token, random_ip()) as alice_ws,
        open_socket(url, bob_token, random_ip()) as bob_ws,
    ):
        await receive(alice_ws), await receive(bob_ws)
        note = await publish(NOTIFICATION_CREATED, notification_data(alice))
        task = await publish(TASK_CREATED, task_data(title="shared"))

        to_alice = [await receive_event(alice_ws), await receive_event(alice_ws)]
        to_bob = await receive_event(bob_ws)

    assert [m["type"] for m in to_alice] == ["notification", "task_created"]
    assert to_alice[0]["id"] == str(note.id)
    assert to_alice[0]["data"]["user_id"] == alice
    assert to_alice[1]["seq"] > to_alice[0]["seq"]
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
    async with live_gateway() as (_, url), open_socket(url, token, random_ip()) as ws:
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
    """What the user missed, from the log, in order, once each: their notification and the
    tasks, not someone else's notification numbered among them."""
    (user_id, token), (other_id, _) = await make_user(), await make_user()
    async with live_gateway(streams) as (_, url):
        async with open_socket(url, token, random_ip()) as ws:
            hello = await receive(ws)
            await publish(TASK_CREATED, task_data(title="seen"))
            seen = await receive_event(ws)
        missed = [
            await publish(TASK_CREATED, task_data(title="missed 0")),
            await publish(NOTIFICATION_CREATED, notification_data(other_id)),
            await publish(NOTIFICATION_CREATED, notification_data(user_id)),
            await publish(TASK_CREATED, task_data(title="missed 1")),
        ]
        mine = [str(event.id) for event in missed if event.data.get("user_id") != other_id]
        query = f"?since={seen['seq']}&epoch={hello['data']['epoch']}"
        async with connect(f"{url}/ws{query}", subprotocols=["bearer", token]) as ws:
            assert (await receive(ws))["type"] == "hello"
            replayed = [await receive_event(ws) for _ in mine]
            await publish(TASK_CREATED, task_data(title="live"))
            live = await receive_event(ws)
        # The same, asked for in a first message.
        async with open_socket(url, token, random_ip()) as ws:
            await receive(ws)
            resume = {"type": "resume", "since": seen["seq"], "epoch": hello["data"]["epoch"]}
            await ws.send(json.dumps(resume))
            again = [await receive_event(ws) for _ in range(len(mine) + 1)]
    assert [m["id"] for m in replayed] == mine
    seqs = [m["seq"] for m in replayed]
    assert seqs == sorted(set(seqs)) and seqs[0] > seen["seq"]
    assert live["seq"] > seqs[-1]
    assert [m["seq"] for m in again] == [*seqs, live["seq"]]
    assert [m["id"] for m in again] == [*mine, live["id"]]


@STREAMS
async def test_a_gap_too_old_or_another_epoch_gets_resync(live_gateway, make_user, streams) -> None:
    _, token = await make_user()
    async with live_gateway(streams, WS_HISTORY_MESSAGES=2) as (_, url):
        async with open_socket(url, token, random_ip()) as ws:
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
    async with a_socket_on_each_of_two_replicas(live_gateway, (token, token)) as (
        (_, _, one),
        (_, _, two),
    ):
        await receive(one), await receive(two)
        events = [await publish(TASK_CREATED, task_data(title=f"t{i}")) for i in range(5)]
        on_one = [await receive_event(one) for _ in events]
        on_two = [await receive_event(two) for _ in events]
    assert [m["id"] for m in on_one] == [m["id"] for m in on_two] == [str(e.id) for e in events]
    assert [m["seq"] for m in on_one] == [m["seq"] for m in on_two]
    assert [m["seq"] for m in on_one] == sorted(m["seq"] for m in on_one)


async def test_a_replica_fills_what_it_missed_from_the_log(live_gateway, make_user) -> None:
    """An event only the first replica received (the second's queue was down, say) reaches the
    second's socket too, before the next one: seqs have no holes in the log, so the second
    sees one and reads it from there."""
    _, token = await make_user()
    async with (
        live_gateway() as (first_app, _),
        live_gateway() as (_, second),
        open_socket(second, token, random_ip()) as ws,
    ):
        await receive(ws)
        only_first = EventEnvelope(type=TASK_CREATED, producer="test", data=task_data())
        await first_app.state.live.hub.deliver(only_first)
        after = await publish(TASK_CREATED, task_data())
        received = [await receive_event(ws), await receive_event(ws)]
    assert [m["id"] for m in received] == [str(only_first.id), str(after.id)]
    assert received[1]["seq"] == received[0]["seq"] + 1


@STREAMS
async def test_an_event_the_log_has_forgotten_is_never_numbered_again(streams) -> None:
    """A replica further behind than the log is long appends events whose ids the log no longer
    keeps: refused (None), not given new seqs, whereas a later event is numbered."""
    redis = Redis.from_url(str(GatewaySettings(REDIS_HOST=REDIS_HOST).redis_url))
    log = (
        RedisLog(redis, f"test:{uuid.uuid4().hex}", 3, 60)
        if streams == "redis"
        else MemoryLog(3, 60)
    )
    start = time.time()
    events = [Message(f"e{i}", start + i, "task:x", '{"type":"t"}') for i in range(5)]
    try:
        _, seqs = await log.append(events)
        _, again = await log.append([events[0], events[4]])
        _, later = await log.append([Message("later", start + 5, "task:x", '{"type":"t"}')])
    finally:
        await redis.aclose()
    assert seqs == [1, 2, 3, 4, 5]
    assert again == [None, 5]
    assert later == [6]


async def test_a_log_that_starts_again_refuses_what_a_replica_had_reached_before() -> None:
    """Redis lost the log: a replica that appended events up to some time in the old epoch
    says so with its next append, and from then on an event that occurred no later (a lagging
    replica's copy, numbered in the old epoch already) is refused, not numbered again."""
    redis = Redis.from_url(str(GatewaySettings(REDIS_HOST=REDIS_HOST).redis_url))
    log = RedisLog(redis, f"test:{uuid.uuid4().hex}", 100, 60)
    start = time.time()
    events = [Message(f"e{i}", start + i, "task:x", '{"type":"t"}') for i in range(5)]
    try:
        old_epoch, seqs = await log.append(events[:4])
        await redis.delete(*log.keys)
        epoch, first = await log.append([events[4]], old_epoch, events[3].occurred_at)
        _, lagging = await log.append([events[2]], None, 0.0)
        _, later = await log.append([Message("later", start + 5, "task:x", '{"type":"t"}')])
    finally:
        await redis.aclose()
    assert seqs == [1, 2, 3, 4]
    assert epoch != old_epoch
    assert first == [1]
    assert lagging == [None]
    assert later == [2]


async def test_after_the_log_starts_again_a_lagging_replica_numbers_nothing_twice(
    live_gateway, make_user
) -> None:
    """Redis lost the log while a replica lagged: the replica ahead starts the new epoch, and
    the lagging one's copy of an event numbered in the old epoch is refused (its sockets
    resync), so the next event takes the next seq on both and nobody gets the old one again."""
    (_, token), (_, lagging_token) = await make_user(), await make_user()
    async with a_socket_on_each_of_two_replicas(live_gateway, (token, lagging_token)) as (
        (first_app, _, ws),
        (second_app, _, lagging),
    ):
        await receive(ws), await receive(lagging)
        events = [
            EventEnvelope(type=TASK_CREATED, producer="test", data=task_data()) for _ in range(3)
        ]
        for event in events[:2]:
            await first_app.state.live.hub.deliver(event)
        [await receive_event(ws) for _ in range(2)]
        await first_app.state.live.redis.delete(*first_app.state.live.log.keys)
        await first_app.state.live.hub.deliver(events[2])
        resync, restarted = await receive(ws), await receive_event(ws)
        await second_app.state.live.hub.deliver(events[0])
        told = await receive(lagging)
        after = await publish(TASK_CREATED, task_data())
        live = await receive_event(ws)
        lagging_live = [await receive_event(lagging), await receive_event(lagging)]
    assert resync["type"] == told["type"] == "resync"
    assert (restarted["id"], restarted["seq"]) == (str(events[2].id), 1)
    assert (live["id"], live["seq"]) == (str(after.id), 2)
    # The new epoch's first message, filled from the log, then the next; not the old one.
    assert [(m["id"], m["seq"]) for m in lagging_live] == [
        (str(events[2].id), 1),
        (str(after.id), 2),
    ]


async def test_a_replica_far_behind_tells_its_sockets_to_resync_and_duplicates_nothing(
    live_gateway, make_user
) -> None:
    """Events the log had numbered and forgotten reach a lagging replica: its socket is told
    to resync, and the other replica's socket (live, then resuming) never gets one twice."""
    (_, token), (_, lagging_token) = await make_user(), await make_user()
    async with a_socket_on_each_of_two_replicas(
        live_gateway, (token, lagging_token), WS_HISTORY_MESSAGES=3
    ) as ((first_app, first, ws), (second_app, _, lagging)):
        hello, _ = await receive(ws), await receive(lagging)
        events = [
            EventEnvelope(type=TASK_CREATED, producer="test", data=task_data()) for _ in range(5)
        ]
        for event in events:
            await first_app.state.live.hub.deliver(event)
        received = [await receive_event(ws) for _ in events]
        await second_app.state.live.hub.deliver(events[0])
        resync = await receive(lagging)
        after = await publish(TASK_CREATED, task_data())
        live = await receive_event(ws)
        query = f"?since={received[-1]['seq']}&epoch={hello['data']['epoch']}"
        async with connect(f"{first}/ws{query}", subprotocols=["bearer", token]) as resumed:
            await receive(resumed)
            replayed = await receive_event(resumed)
    assert resync["type"] == "resync"
    assert [m["id"] for m in received] == [str(e.id) for e in events]
    assert (live["id"], live["seq"]) == (str(after.id), received[-1]["seq"] + 1)
    assert replayed["id"] == str(after.id)


async def test_uvicorn_sockets_take_the_fast_path(live_gateway, make_user) -> None:
    """Under uvicorn the hub writes frames to the connection itself (decision 0075): if an
    upgrade of uvicorn hid its connection, every message would go the slow way, unnoticed."""
    _, token = await make_user()
    async with live_gateway() as (app, url), open_socket(url, token, random_ip()) as ws:
        await receive(ws)
        [socket] = app.state.live.hub.sockets[next(iter(app.state.live.hub.sockets))]
        await publish(TASK_CREATED, task_data())
        await receive_event(ws)
    assert socket._connection is not None
    assert socket.sent_events == 1


async def test_an_event_is_one_entry_of_the_log_whatever_the_number_of_users(
    live_gateway, make_user
) -> None:
    """The Redis work of an event does not grow with the users: one entry, one body."""
    users = [await make_user() for _ in range(4)]
    async with live_gateway() as (app, url), contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(open_socket(url, token, random_ip()))
            for _, token in users
        ]
        for ws in sockets:
            await receive(ws)
        redis, log_key = app.state.live.redis, app.state.live.log.keys[2]
        before = await redis.xlen(log_key)
        event = await publish(TASK_CREATED, task_data(title="for everyone"))
        received = [await receive_event(ws) for ws in sockets]
        after = await redis.xlen(log_key)
        last = await redis.xrevrange(log_key, count=1)
    assert {m["id"] for m in received} == {str(event.id)}
    assert after == before + 1 or after == app.state.live.settings.WS_HISTORY_MESSAGES
    assert last[0][0] == f"{received[0]['seq']}-0".encode()


async def test_a_log_that_starts_again_resyncs_open_sockets(live_gateway, make_user) -> None:
    """The log lost (Redis restarted empty, say): open sockets get `resync` with the new
    epoch, then the new log's messages."""
    _, token = await make_user()
    async with live_gateway() as (app, url), open_socket(url, token, random_ip()) as ws:
        hello = await receive(ws)
        await app.state.live.redis.delete(*app.state.live.log.keys)
        await publish(TASK_CREATED, task_data())
        resync = await receive(ws)
        first = await receive_event(ws)
    assert resync["type"] == "resync"
    assert resync["data"]["epoch"] != hello["data"]["epoch"]
    assert resync["data"]["seq"] == 0
    assert first["seq"] == 1


async def test_messages_within_the_flush_window_go_together_and_before_a_resync(
    live_gateway, make_user
) -> None:
    """The first event after a quiet spell is written at once; those numbered within
    WS_FLUSH_MS of that write wait for the next flush, and a resync (the log started again)
    goes after them, never before, then the new log's messages."""
    _, token = await make_user()
    async with (
        live_gateway(WS_FLUSH_MS=3000) as (app, url),
        open_socket(url, token, random_ip()) as ws,
    ):
        hello = await receive(ws)
        hub = app.state.live.hub
        events = [
            EventEnvelope(type=TASK_CREATED, producer="test", data=task_data()) for _ in range(4)
        ]
        await hub.deliver(events[0])
        first = await receive_event(ws)
        await hub.deliver(events[1])
        await hub.deliver(events[2])
        with pytest.raises(TimeoutError):
            await receive(ws, timeout=0.5)
        await app.state.live.redis.delete(*app.state.live.log.keys)
        await hub.deliver(events[3])
        held = [await receive_event(ws), await receive_event(ws)]
        resync = await receive(ws)
        after = await receive_event(ws)
    assert first["id"] == str(events[0].id)
    assert [m["id"] for m in held] == [str(events[1].id), str(events[2].id)]
    assert [m["seq"] for m in held] == [first["seq"] + 1, first["seq"] + 2]
    assert resync["type"] == "resync"
    assert set(resync["data"]) == {"epoch", "seq"}
    assert resync["data"]["seq"] == 0
    assert resync["data"]["epoch"] != hello["data"]["epoch"]
    assert (after["id"], after["seq"]) == (str(events[3].id), 1)


# --- limits


async def test_a_client_that_stops_reading_is_closed_others_keep_receiving(
    live_gateway, make_user
) -> None:
    (_, slow_token), (_, fast_token) = await make_user(), await make_user()
    # Streams in memory: 10 MB of events need not go to the shared Redis.
    async with live_gateway("memory", WS_SEND_QUEUE=32) as (app, url):
        reader, writer = await stalled_client(url, slow_token, random_ip())
        async with open_socket(url, fast_token, random_ip()) as fast:
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
        async with (
            open_socket(url, token, random_ip()) as a,
            open_socket(url, token, random_ip()) as b,
        ):
            await receive(a), await receive(b)
            async with open_socket(url, token, random_ip()) as third:
                assert await close_code(third) == 4008
        async with open_socket(url, token, random_ip()) as again:
            assert (await receive(again))["type"] == "hello"


async def test_handshakes_are_rate_limited_per_ip(live_gateway, make_user) -> None:
    _, token = await make_user()
    ip = random_ip()
    async with live_gateway(WS_HANDSHAKE_RATE="2/minute") as (_, url):
        for _ in range(2):
            async with open_socket(url, token, ip) as ws:
                await receive(ws)
        with pytest.raises(InvalidStatus) as refused:
            async with open_socket(url, token, ip):
                pass
        async with open_socket(url, token, random_ip()) as other_ip:
            assert (await receive(other_ip))["type"] == "hello"
    assert refused.value.response.status_code == 429


async def test_client_messages_are_size_limited(live_gateway, make_user) -> None:
    _, token = await make_user()
    async with (
        live_gateway(WS_MAX_MESSAGE_BYTES=100) as (_, url),
        open_socket(url, token, random_ip()) as ws,
    ):
        await receive(ws)
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"
        await ws.send(json.dumps({"type": "ping", "padding": "x" * 200}))
        assert await close_code(ws) == 1009


async def test_health_counts_open_sockets(live_gateway, make_user, client_for) -> None:
    _, token = await make_user()
    async with live_gateway() as (app, url), client_for(app) as client:
        async with open_socket(url, token, random_ip()) as ws:
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
        async with open_socket(ws_base, token, random_ip()) as ws:
            await receive(ws)
            # The queue is declared again just after the connection: what is published before
            # that is not this replica's (no retries on a live queue), so publish until one is.
            published: set[str] = set()
            received = None
            async with asyncio.timeout(60):
                while received is None:
                    note = notification_data(recipient)
                    published.add(
                        str(
                            (
                                await publish_on_rabbitmq(
                                    EventEnvelope(
                                        type=NOTIFICATION_CREATED, producer="test", data=note
                                    )
                                )
                            ).id
                        )
                    )
                    with contextlib.suppress(TimeoutError):
                        received = await receive_event(ws, timeout=1)
    proxy.stop()
    assert received["id"] in published
