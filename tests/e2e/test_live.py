"""Live updates over WebSocket through the gateway, in both modes: real processes, real
sockets (the `websockets` client), events from the services' outboxes."""

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from websockets.asyncio.client import ClientConnection

from identity.keys import KeyRing
from identity.settings import IdentitySettings
from taskhub_common.contracts import NOTIFICATION_CREATED
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import create_task
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
)
from tests.e2e.accounts import register
from tests.e2e.stack import Process, Stack, free_port, uvicorn


def ws_url(stack: Stack) -> str:
    return stack.base_url.replace("http://", "ws://")


async def receive_event_about(
    ws: ClientConnection, task_id: str, kind: str | None = None
) -> dict[str, Any]:
    """The next event (of this type) about this task: other tests' events reach every user."""
    while True:
        message = await receive_event(ws)
        if message["data"].get("task_id") == task_id and kind in (None, message["type"]):
            return message


async def test_each_auth_method_works(stack: Stack, api: httpx.AsyncClient, client_ip) -> None:
    account = await register(api)
    token = account["access_token"]
    async with open_socket(ws_url(stack), token, client_ip) as ws:
        assert ws.subprotocol == "bearer"
        assert (await receive(ws))["type"] == "hello"
    async with open_socket(ws_url(stack), None, client_ip, path=f"/ws/{token}") as ws:
        assert (await receive(ws))["type"] == "hello"
    response = await api.post("/api/auth/ws-ticket", headers=account["headers"])
    assert response.status_code == 200
    ticket = response.json()["ticket"]
    assert response.json()["expires_in"] == 30
    async with open_socket(ws_url(stack), None, client_ip, path=f"/ws?ticket={ticket}") as ws:
        assert (await receive(ws))["type"] == "hello"
    # The token in the path never reaches a log line.
    for process in stack.processes:
        assert token not in process.log_path.read_text(errors="replace")


async def test_bad_and_reused_credentials_are_refused(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    account = await register(api)
    anonymous = await api.post("/api/auth/ws-ticket")
    assert anonymous.status_code == 401
    ticket = (await api.post("/api/auth/ws-ticket", headers=account["headers"])).json()["ticket"]
    base = ws_url(stack)
    async with open_socket(base, None, client_ip, path=f"/ws?ticket={ticket}") as ws:
        assert (await receive(ws))["type"] == "hello"
    refused = [
        open_socket(base, None, client_ip, path=f"/ws?ticket={ticket}"),  # reused
        open_socket(base, "not-a-token", client_ip),
        open_socket(base, account["access_token"] + "x", client_ip),
        open_socket(base, None, client_ip, path="/ws/not-a-token"),
        open_socket(base, None, client_ip),
    ]
    for attempt in refused:
        async with attempt as ws:
            assert await close_code(ws) == 4001


async def test_a_task_reaches_another_users_socket_after_the_commit(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    author, reader = await register(api), await register(api)
    async with open_socket(ws_url(stack), reader["access_token"], client_ip) as ws:
        await receive(ws)
        task = await create_task(api, author["headers"], title="live one")
        message = await receive_event_about(ws, task["id"])
        # The change was committed before the message went out: the task is there to read.
        readable = await api.get(f"/api/tasks/{task['id']}", headers=reader["headers"])
        await api.put(
            f"/api/tasks/{task['id']}", headers=author["headers"], json={"title": "renamed"}
        )
        updated = await receive_event_about(ws, task["id"])
        await api.delete(f"/api/tasks/{task['id']}", headers=author["headers"])
        deleted = await receive_event_about(ws, task["id"])
    assert message["type"] == "task_created"
    assert message["data"]["id"] == message["data"]["task_id"] == task["id"]
    assert message["data"]["title"] == "live one"
    assert message["data"]["creator"]["email"] is None
    assert readable.status_code == 200
    assert (updated["type"], updated["data"]["title"]) == ("task_updated", "renamed")
    assert deleted["type"] == "task_deleted"
    assert updated["seq"] > message["seq"]
    assert deleted["seq"] > updated["seq"]


async def test_comments_and_files_reach_sockets(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    author, reader = await register(api), await register(api)
    task = await create_task(api, author["headers"])
    async with open_socket(ws_url(stack), reader["access_token"], client_ip) as ws:
        await receive(ws)
        comment = await api.post(
            f"/api/tasks/{task['id']}/comments", headers=author["headers"], json={"content": "hi"}
        )
        added = await receive_event_about(ws, task["id"], "comment_added")
        upload = await api.post(
            f"/api/tasks/{task['id']}/files",
            headers=author["headers"],
            files={"files": ("notes.txt", b"some notes", "text/plain")},
        )
        uploaded = await receive_event_about(ws, task["id"], "file_uploaded")
    assert comment.status_code == upload.status_code == 201
    assert (added["type"], added["data"]["id"]) == ("comment_added", comment.json()["id"])
    assert "task_creator_id" not in added["data"]
    assert (uploaded["type"], uploaded["data"]["id"]) == ("file_uploaded", upload.json()[0]["id"])


async def test_resume_delivers_exactly_the_missed_messages(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    author, reader = await register(api), await register(api)
    base, token = ws_url(stack), reader["access_token"]
    async with open_socket(base, token, client_ip) as ws:
        hello = await receive(ws)
        first = await create_task(api, author["headers"])
        seen = await receive_event_about(ws, first["id"])
        epoch = hello["data"]["epoch"]
    missed = [await create_task(api, author["headers"]) for _ in range(3)]
    # A second socket, open meanwhile, shows when the missed ones have been numbered.
    # (No bus orders events of different commits, so "the last one" is any of the three.)
    missed_ids = {task["id"] for task in missed}
    async with open_socket(base, token, client_ip) as watcher:
        await receive(watcher)
        numbered: set[str] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                while not missed_ids <= numbered:
                    numbered.add((await receive_event(watcher))["data"].get("task_id"))
    query = f"/ws?since={seen['seq']}&epoch={epoch}"
    async with open_socket(base, token, client_ip, path=query) as ws:
        assert (await receive(ws))["type"] == "hello"
        replayed = []
        async with asyncio.timeout(15):
            while not missed_ids <= {m["data"].get("task_id") for m in replayed}:
                replayed.append(await receive_event(ws))
    # Everything after `since`, in seq order, once each: the three among other tests' events.
    seqs = [message["seq"] for message in replayed]
    assert seqs == sorted(set(seqs))
    assert seqs[0] > seen["seq"]
    mine = [m["data"]["task_id"] for m in replayed if m["data"].get("task_id") in missed_ids]
    assert sorted(mine) == sorted(missed_ids)


async def test_a_too_old_since_or_another_epoch_gets_resync(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    reader = await register(api)
    base, token = ws_url(stack), reader["access_token"]
    async with open_socket(base, token, client_ip) as ws:
        hello = await receive(ws)
    epoch, head = hello["data"]["epoch"], hello["data"]["seq"]
    for query in (f"since={head + 1000}&epoch={epoch}", f"since={head}&epoch=not-{epoch}"):
        async with open_socket(base, token, client_ip, path=f"/ws?{query}") as ws:
            await receive(ws)
            resync = await receive(ws)
            assert resync["type"] == "resync"
            assert resync["data"]["epoch"] == epoch


async def test_a_notification_reaches_only_its_recipient(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    """notification.created published on RabbitMQ, as the notifier's relay does. (The
    embedded mode's bus is inside its process: the gateway's own tests publish on it.)"""
    if stack.mode != "distributed":
        pytest.skip("the embedded bus is reached from inside its process only")
    recipient, other = await register(api), await register(api)
    base = ws_url(stack)
    async with (
        open_socket(base, recipient["access_token"], client_ip) as mine,
        open_socket(base, other["access_token"], client_ip) as theirs,
    ):
        await receive(mine), await receive(theirs)
        notification = await publish_notification(recipient["id"])
        received = await receive_event(mine)
        marker = await create_task(api, other["headers"])
        # The other user's next event is the task: the notification was not theirs.
        assert (await receive_event(theirs))["data"].get("task_id") == marker["id"]
    assert received["type"] == "notification"
    assert received["id"] == str(notification.id)
    assert received["data"]["user_id"] == recipient["id"]


async def publish_notification(user_id: str) -> EventEnvelope:
    data = {**notification_data(user_id), "task_id": None}
    return await publish_on_rabbitmq(
        EventEnvelope(type=NOTIFICATION_CREATED, producer="notifier", data=data)
    )


@contextlib.asynccontextmanager
async def second_gateway(stack: Stack):
    """Another gateway replica with the same settings as the stack's, on its own port."""
    first = next(process for process in stack.processes if process.name == "gateway")
    port = free_port()
    replica = Process(
        "gateway-2",
        uvicorn(first.command[0], "gateway.app:create_app", port),
        dict(first.env),
        stack.workdir / "gateway-2.log",
    )
    replica.start()
    try:
        async with asyncio.timeout(30), httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    health = (await client.get(f"http://127.0.0.1:{port}/api/health")).json()
                    if health["status"] == "ok":
                        break
                await asyncio.sleep(0.2)
        yield replica, f"ws://127.0.0.1:{port}"
    finally:
        assert replica.stop() == 0, replica.log_tail()


async def test_two_replicas_deliver_to_a_users_sockets_on_both(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    if stack.mode != "distributed":
        pytest.skip("one process in the embedded mode")
    author, reader = await register(api), await register(api)
    token = reader["access_token"]
    async with (
        second_gateway(stack) as (replica, second),
        open_socket(ws_url(stack), token, client_ip) as one,
        open_socket(second, token, client_ip) as two,
    ):
        await receive(one), await receive(two)
        task = await create_task(api, author["headers"])
        on_one = await receive_event_about(one, task["id"])
        on_two = await receive_event_about(two, task["id"])
        assert on_one == on_two  # same message, same seq, from either replica

        # Stopping the second replica closes its sockets (1012, "restart") and loses
        # nothing for the first one's.
        assert replica.stop() == 0
        assert await close_code(two) == 1012
        later = [await create_task(api, author["headers"]) for _ in range(3)]
        received = [await receive_event_about(one, task["id"]) for task in later]
    assert [m["data"]["task_id"] for m in received] == [task["id"] for task in later]
    assert [m["seq"] for m in received] == sorted(m["seq"] for m in received)


async def stack_key_ring(stack: Stack) -> KeyRing:
    """Identity's signing keys, loaded from the stack's database as identity loads them."""
    engine = create_async_engine(
        "postgresql+asyncpg://",
        connect_args={**stack.database_address(), "server_settings": {"search_path": "identity"}},
    )
    key_ring = KeyRing(IdentitySettings())
    try:
        async with AsyncSession(engine) as session:
            await key_ring.load(session)
    finally:
        await engine.dispose()
    return key_ring


async def test_an_expiring_token_is_announced_renewed_in_band_or_closed_at_expiry(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    """Tokens that expire in seconds (signed with the stack's own key; identity issues them
    for whole minutes): `token_expiring` comes at once (60 s before), a fresh token sent as
    `auth` keeps the socket past the first one's expiry, and without one it closes with 4001."""
    if stack.mode == "compose":
        pytest.skip("the compose stack's PostgreSQL (identity's signing keys) is not published")
    account = await register(api)
    user_id, base = account["user"]["id"], ws_url(stack)
    key_ring = await stack_key_ring(stack)
    async with open_socket(base, short_access_token(key_ring, user_id, 4), client_ip) as ws:
        assert (await receive(ws))["type"] == "hello"
        expiring = await receive_control(ws, "token_expiring")
        await ws.send(json.dumps({"type": "auth", "token": account["access_token"]}))
        renewed = await receive_control(ws, "auth_ok")
        await asyncio.sleep(5)  # past the first token's expiry
        await ws.send(json.dumps({"type": "ping"}))
        assert (await receive_control(ws, "pong"))["type"] == "pong"
    assert expiring["data"]["expires_at"] <= time.time() + 4
    assert renewed["data"]["expires_at"] > time.time() + 60
    issued = time.time()
    async with open_socket(base, short_access_token(key_ring, user_id, 3), client_ip) as ws:
        assert (await receive(ws))["type"] == "hello"
        assert await close_code(ws, timeout=30) == 4001
        assert time.time() >= issued + 2  # at `exp`, in whole seconds


async def receive_control(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next control message of this type (other tests' events reach every user)."""
    while True:
        message = await receive(ws)
        if message["type"] == kind:
            return message


async def test_a_client_that_stops_reading_is_closed_others_keep_receiving(
    stack: Stack, api: httpx.AsyncClient, client_ip
) -> None:
    """One client stops reading while 1,000 tasks of 9 KB are created: its socket is closed
    with 1013 once more than 256 messages' worth wait unsent behind the kernel's buffers (or
    1011 if uvicorn's keepalive, a ping unanswered for 20 s, comes first on a slow machine;
    the gateway's own test pins 1013), and the other client, reading all along, gets every
    task, in order."""
    author, slow, fast = await register(api), await register(api), await register(api)
    base = ws_url(stack)
    reader, writer = await stalled_client(base, slow["access_token"], client_ip)
    received: list[dict[str, Any]] = []
    try:
        async with open_socket(base, fast["access_token"], client_ip) as ws:
            await receive(ws)

            async def keep_reading() -> None:
                while True:
                    received.append(await receive_event(ws, timeout=60))

            fast_reader = asyncio.create_task(keep_reading())
            created: list[str] = []
            for batch in range(10):
                tasks = [
                    {"title": f"bulk {batch}.{i}", "description": "x" * 9_000} for i in range(100)
                ]
                response = await api.post(
                    "/api/tasks/bulk", headers=author["headers"], json={"tasks": tasks}
                )
                assert response.status_code == 201, response.text
                created.extend(task["id"] for task in response.json())
            expected = set(created)
            try:
                async with asyncio.timeout(120):
                    while expected - {m["data"].get("task_id") for m in received}:
                        if fast_reader.done():
                            fast_reader.result()  # its failure, as it is
                        await asyncio.sleep(0.05)
            finally:
                fast_reader.cancel()
            # The slow socket is gone: once it reads again, it finds the close frame after
            # what had been sent.
            async with asyncio.timeout(60):
                stream = await reader.read()
    finally:
        writer.close()
    seqs = [m["seq"] for m in received]
    assert seqs == sorted(set(seqs))
    mine = [m["data"]["task_id"] for m in received if m["data"].get("task_id") in expected]
    assert sorted(mine) == sorted(created)
    assert close_frame_code(stream) in (1011, 1013)
