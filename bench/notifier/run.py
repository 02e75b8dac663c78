"""Notifier benchmark: a burst of task.assigned events, then a queue of emails.

Starts the notifier as a uvicorn process on the local PostgreSQL and RabbitMQ, with a local
SMTP sink (aiosmtpd) in this process. Publishes 10,000 task.assigned events in a burst straight
to the exchange (as the tasks relay would) and prints the events handled per second and the
time from each event to its notification row (p50/p99). Then queues 1,000 emails and prints how
long the mail worker takes to hand them all to the sink.

    make bench-notifier          # or: python -m bench.notifier.run --events 10000 --emails 1000
Prints figures; asserts nothing.
"""

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import asyncpg
import httpx
from aiosmtpd.controller import Controller

from bench.tasks.run import percentile
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.testing import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    RABBITMQ_URL,
    database_env,
    recreate_database,
)
from taskhub_common.testing.live import task_data
from tests.e2e.stack import Process, free_port, uvicorn

DATABASE = "taskhub_bench_notifier"
USERS = 200


class Sink:
    def __init__(self) -> None:
        self.received = 0
        self.last_at = 0.0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.received += 1
        self.last_at = time.perf_counter()
        return "250 OK"


def user_event(user_id: uuid.UUID) -> EventEnvelope:
    return EventEnvelope(
        type="user.registered",
        producer="identity",
        actor_id=user_id,
        aggregate_id=user_id,
        data={
            "id": str(user_id),
            "email": f"bench-{user_id.hex[:12]}@example.com",
            "username": f"bench_{user_id.hex[:12]}",
            "full_name": "Bench User",
            "avatar_url": None,
            "is_active": True,
            "created_at": datetime.now(UTC).isoformat(),
        },
    )


def assigned_event(actor: uuid.UUID, assignee: uuid.UUID, index: int) -> EventEnvelope:
    task_id = uuid.uuid4()
    return EventEnvelope(
        type="task.assigned",
        producer="tasks",
        actor_id=actor,
        aggregate_id=task_id,
        data=task_data(
            id=str(task_id),
            title=f"bench task {index}",
            created_by=str(actor),
            assigned_to=str(assignee),
            changes={"assigned_to": str(assignee)},
        ),
    )


async def publish(exchange: aio_pika.abc.AbstractExchange, events: list[EventEnvelope]) -> None:
    """With confirms, many in flight at once, as a relay batch would."""
    for start in range(0, len(events), 500):
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        body=event.model_dump_json().encode(),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=str(event.id),
                        type=event.type,
                    ),
                    routing_key=event.type,
                )
                for event in events[start : start + 500]
            )
        )


async def wait_for(check, what: str, within: float = 600) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def main(events: int, emails: int, replicas: int) -> None:
    await recreate_database(DATABASE)
    sink = Sink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    ports = [free_port() for _ in range(replicas)]
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-notifier-"))
    notifiers = [
        Process(
            f"notifier-{index}",
            uvicorn(sys.executable, "notifier.app:create_app", port),
            {
                **database_env(DATABASE),
                "RABBITMQ_URL": RABBITMQ_URL,
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp.port),
                "MAIL_POLL_SECONDS": "0.2",
                "OVERDUE_SCAN_INTERVAL": "3600",
                "LOG_LEVEL": "WARNING",
                "DATA_DIR": str(workdir),
            },
            workdir / f"notifier-{index}.log",
        )
        for index, port in enumerate(ports)
    ]
    for notifier in notifiers:
        notifier.start()
    db = await asyncpg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        database=DATABASE,
        server_settings={"search_path": "notifier"},
    )
    connection = await aio_pika.connect_robust(RABBITMQ_URL)
    try:
        for port in ports:
            await wait_ready(port)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        users = [uuid.uuid4() for _ in range(USERS)]
        await publish(exchange, [user_event(user) for user in users])
        await wait_for(lambda: _count(db, "SELECT count(*) FROM user_emails", USERS), "users known")
        # The burst measures in-app notices; email for them is off (measured on its own below).
        await db.executemany(
            "INSERT INTO type_preferences VALUES ($1, 'task_assigned', true, false)",
            [(user,) for user in users],
        )
        burst = [assigned_event(users[i % USERS], users[(i + 1) % USERS], i) for i in range(events)]
        began = time.perf_counter()
        await publish(exchange, burst)
        published = time.perf_counter() - began
        await wait_for(
            lambda: _count(db, "SELECT count(*) FROM notifications", events), "all notices"
        )
        handled = time.perf_counter() - began
        print(f"{replicas} notifier process(es); published {events} events in {published:.1f} s")
        print(
            f"handled {events} events in {handled:.1f} s: {events / handled:.0f} events/s "
            f"(one notification and one notification.created event each)"
        )
        occurred = {event.id: event.occurred_at for event in burst}
        rows = await db.fetch("SELECT cause_id, created_at FROM notifications")
        delays = [(row["created_at"] - occurred[row["cause_id"]]).total_seconds() for row in rows]
        print(
            f"event to notification row: p50 {percentile(delays, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(delays, 0.99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms"
        )
        await queue_emails(db, users, emails)
        began = time.perf_counter()
        await db.execute("UPDATE mail_outbox SET send_after = now() WHERE sent_at IS NULL")
        await wait_for(lambda: _sink_has(sink, emails), "all emails")
        elapsed = sink.last_at - began
        print(
            f"sent {emails} queued emails to a local SMTP sink in {elapsed:.1f} s "
            f"({emails / elapsed:.0f}/s)"
        )
    finally:
        await connection.close()
        await db.close()
        for notifier in notifiers:
            notifier.stop()
        smtp.stop()


async def wait_ready(port: int) -> None:
    async with httpx.AsyncClient() as client:

        async def ready() -> bool:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/health/ready")
                return response.status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, "the notifier is ready", within=600)


async def queue_emails(db: asyncpg.Connection, users: list[uuid.UUID], count: int) -> None:
    """Messages as deliveries write them, held back until the clock starts."""
    await db.executemany(
        "INSERT INTO mail_outbox (id, cause_id, user_id, task_id, type, subject, body, send_after)"
        " VALUES ($1, $2, $3, $4, 'task_assigned', 'New task assigned', $5, 'infinity')",
        [
            (uuid.uuid4(), uuid.uuid4(), users[i % len(users)], uuid.uuid4(), f"bench mail {i}")
            for i in range(count)
        ],
    )


async def _count(db: asyncpg.Connection, sql: str, expected: int) -> bool:
    return await db.fetchval(sql) >= expected


async def _sink_has(sink: Sink, expected: int) -> bool:
    return sink.received >= expected


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--emails", type=int, default=1_000)
    parser.add_argument("--replicas", type=int, default=1, help="notifier processes")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.emails, args.replicas))
