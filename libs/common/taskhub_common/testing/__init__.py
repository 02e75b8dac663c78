"""Helpers for the suite's tests: the real local servers they run against, and what the
service test suites share (their fixtures: taskhub_common.testing.suite)."""

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select, text

from taskhub_common.outbox import outbox
from taskhub_common.tracing import use_tracer_provider

PG_HOST = os.environ.get("TEST_DB_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_DB_PORT", "5432"))
PG_USER = os.environ.get("TEST_DB_USER", "postgres")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")


async def recreate_database(name: str) -> None:
    """Drop and create a database for one test run. Fails loudly when PostgreSQL is down:
    a test that needs a server never skips."""
    connection = await _admin_connection()
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def create_database_if_missing(name: str) -> None:
    connection = await _admin_connection()
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def database_env(name: str) -> dict[str, str]:
    return {"DB_HOST": PG_HOST, "DB_PORT": str(PG_PORT), "DB_USER": PG_USER, "DB_NAME": name}


def new_user() -> dict[str, str]:
    """A registration body no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "email": f"user-{suffix}@example.com",
        "username": f"user_{suffix}",
        "full_name": f"User {suffix}",
        "password": "correct horse battery",
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_task(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict:
    """A task made through the tasks API (in-process or through the gateway); 201 or fail."""
    body.setdefault("title", f"task {uuid.uuid4().hex[:8]}")
    response = await client.post("/api/tasks", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def word() -> str:
    """A word no other test uses (for a tag, a title or a search)."""
    return "w" + uuid.uuid4().hex[:12]


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def asgi_client(application: FastAPI, base_url: str, **options: Any) -> httpx.AsyncClient:
    """A client of an app in this process (no server, no lifespan: start the app first)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application, **options), base_url=base_url
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    """Until `check()` holds (events travel asynchronously); fails saying `what` never did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


async def scalar(app: FastAPI, sql: str, **params: Any) -> Any:
    """One value from the app's own database (its schema)."""
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(text(sql), params)


async def wait_in_directory(app: FastAPI, user_id: str) -> None:
    """Until identity's user.registered event has reached this app's user directory."""

    async def known() -> bool:
        found = "SELECT count(*) FROM users WHERE id = :id"
        return bool(await scalar(app, found, id=uuid.UUID(user_id)))

    service = app.state.settings.SERVICE_NAME
    await eventually(known, f"user {user_id} is in the {service} directory")


async def wait_task_deleted(app: FastAPI, task_id: str) -> None:
    """Until the tasks service's task.deleted event has reached this app."""

    async def flagged() -> bool:
        found = "SELECT count(*) FROM deleted_tasks WHERE task_id = :id"
        return bool(await scalar(app, found, id=uuid.UUID(task_id)))

    await eventually(flagged, f"task {task_id} is known deleted")


async def outbox_events(app: FastAPI, **where: str) -> list[dict[str, Any]]:
    """The app's outbox rows, oldest first, as `{routing_key, sent, **envelope}`, filtered by
    envelope fields (`aggregate_id=...`) or, with a `data_` prefix, by fields of `data`
    (`data_task_id=...`)."""
    statement = select(outbox.c.routing_key, outbox.c.payload, outbox.c.sent_at)
    for key, value in where.items():
        if key.startswith("data_"):
            field = outbox.c.payload["data"][key.removeprefix("data_")]
        else:
            field = outbox.c.payload[key]
        statement = statement.where(field.astext == value)
    async with app.state.database.sessionmaker() as session:
        rows = (await session.execute(statement.order_by(outbox.c.position))).all()
    return [
        {"routing_key": row.routing_key, "sent": row.sent_at is not None, **row.payload}
        for row in rows
    ]


class TcpProxy:
    """A TCP forwarder that tests cut and restore, to make a server (RabbitMQ, Redis)
    unreachable for one client without stopping it for everyone. Threads, not asyncio, so it
    forwards whatever event loop (if any) the test is blocked in."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones, as an outage would."""
        with self._lock:
            if self._listener is not None:
                # shutdown() wakes the thread blocked in accept(); close() alone would not.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            # The 5 s were for connecting: left on, a recv() on a link idle for 5 s (RabbitMQ
            # between heartbeats, a pooled database connection) would end the forwarding.
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update({client, upstream})
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, as OTEL_EXPORTER_OTLP_ENDPOINT turns it on, for the apps, clients and
    handlers made meanwhile; their finished spans kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)
