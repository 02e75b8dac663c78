"""Inspect and replay a service's dead letters.

    python -m taskhub_common.dlq tasks            # list what is there
    python -m taskhub_common.dlq tasks --replay   # give them back to tasks' handlers
    python -m taskhub_common.dlq                  # every service that consumes events

With RABBITMQ_URL (or --url) they are the queue `<service>.events.dlq`; without, the embedded
mode's, kept in the service's `event_queue` table (taskhub_common.local_bus) in the database its
settings name (by default the embedded server under DATA_DIR).

A replayed event starts its retries afresh; the consumer's inbox still drops any event that
was in fact handled before.
"""

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass

import aio_pika
from sqlalchemy import func, select, update

from taskhub_common.bus import copy_message
from taskhub_common.db import Database
from taskhub_common.outbox import event_queue
from taskhub_common.registry import SERVICES
from taskhub_common.settings import ServiceSettings


@dataclass
class DeadLetter:
    event_id: str | None
    event_type: str | None
    attempts: int
    error: str | None


async def inspect_dead_letters(url: str, service: str) -> list[DeadLetter]:
    """Read every dead letter without taking it: nothing is acked, so closing the channel
    puts them all back."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{service}.events.dlq", durable=True)
        found = []
        while (message := await queue.get(fail=False)) is not None:
            headers = message.headers or {}
            found.append(
                DeadLetter(
                    event_id=message.message_id,
                    event_type=message.type,
                    attempts=int(headers.get("x-attempt", 1)) - 1,
                    error=str(headers["x-error"]) if "x-error" in headers else None,
                )
            )
    return found


async def replay_dead_letters(url: str, service: str) -> int:
    connection = await aio_pika.connect(url)
    replayed = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"{service}.events.dlq", durable=True)
        while (message := await queue.get(fail=False)) is not None:
            headers = {
                key: value
                for key, value in (message.headers or {}).items()
                if key not in ("x-attempt", "x-error")
            }
            await channel.default_exchange.publish(
                copy_message(message, headers), routing_key=f"{service}.events"
            )
            await message.ack()  # only once the broker confirmed the copy
            replayed += 1
    return replayed


async def inspect_local_dead_letters(database: Database, service: str) -> list[DeadLetter]:
    async with database.sessionmaker() as session:
        rows = await session.execute(
            select(event_queue.c.event_id, event_queue.c.envelope, event_queue.c.attempts)
            .add_columns(event_queue.c.error)
            .where(event_queue.c.queue == f"{service}.events", event_queue.c.dead_at.isnot(None))
            .order_by(event_queue.c.position)
        )
        return [
            DeadLetter(str(row.event_id), row.envelope.get("type"), row.attempts, row.error)
            for row in rows
        ]


async def replay_local_dead_letters(database: Database, service: str) -> int:
    async with database.sessionmaker.begin() as session:
        result = await session.execute(
            update(event_queue)
            .where(event_queue.c.queue == f"{service}.events", event_queue.c.dead_at.isnot(None))
            .values(dead_at=None, attempts=0, error=None, available_at=func.now())
        )
        return result.rowcount


async def _run(service: str, replay: bool, url: str | None) -> None:
    if url:
        if replay:
            count = await replay_dead_letters(url, service)
        else:
            letters = await inspect_dead_letters(url, service)
    else:
        database = Database(ServiceSettings(SERVICE_NAME=service))
        try:
            if replay:
                count = await replay_local_dead_letters(database, service)
            else:
                letters = await inspect_local_dead_letters(database, service)
        finally:
            await database.dispose()
    if replay:
        sys.stdout.write(f"replayed {count} event(s) to {service}.events\n")
        return
    for letter in letters:
        sys.stdout.write(json.dumps({"service": service, **letter.__dict__}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service", nargs="?", help="default: every service that consumes events")
    parser.add_argument("--replay", action="store_true")
    parser.add_argument("--url", default=os.environ.get("RABBITMQ_URL") or None)
    args = parser.parse_args()
    services = [args.service] if args.service else [e.name for e in SERVICES if e.consumes_events]
    for service in services:
        asyncio.run(_run(service, args.replay, args.url))


if __name__ == "__main__":
    main()
