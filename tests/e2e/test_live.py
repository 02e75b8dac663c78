"""Live updates over WebSocket through the gateway, in both modes: real processes, real
sockets (the `websockets` client), events from the services' outboxes."""

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from taskhub_common.contracts import NOTIFICATION_CREATED
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.testing import RABBITMQ_URL, create_task
from tests.e2e.accounts import register
from tests.e2e.stack import Process, Stack, free_port, uvicorn


def ws_url(stack: Stack) -> str:
    return stack.base_url.replace("http://", "ws://")


def open_socket(
    base: str, token: str | None, client_ip: str, path: str = "/ws", **options: Any
) -> Any:
    """/ws with the token as the subprotocol `bearer, <token>`."""
    return connect(
        f"{base}{path}",
        subprotocols=["bearer", token] if token else None,
        additional_headers={"X-Forwarded-For": client_ip},
        **options,
    )


async def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def receive_event(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    """The next event message (control messages such as hello skipped)."""
    while True:
        message = await receive(ws, timeout)
        if "seq" in message:
            return message


async def receive_event_about(
    ws: ClientConnection, task_id: str, kind: str | None = None
) -> dict[str, Any]:
    """The next event (of this type) about this task: other tests' events reach every user."""
    while True:
        message = await receive_event(ws)
        if message["data"].get("task_id") == task_id and kind in (None, message["type"]):
            return message


async def close_code(ws: ClientConnection, timeout: float = 10) -> int:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


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
    assert seqs == list(range(seen["seq"] + 1, seen["seq"] + 1 + len(replayed)))
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
    data = {
        "id": str(uuid.uuid4()),
        "user_id": user_id,
        "task_id": None,
        "type": "task_assigned",
        "title": "Assigned",
        "message": "You were assigned a task",
        "is_read": False,
        "created_at": datetime.now(UTC).isoformat(),
    }
    envelope = EventEnvelope(type=NOTIFICATION_CREATED, producer="notifier", data=data)
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
