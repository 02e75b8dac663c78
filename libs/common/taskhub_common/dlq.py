"""Inspect and replay a service's dead-letter queue `<service>.events.dlq`.

    python -m taskhub_common.dlq identity            # list what is there
    python -m taskhub_common.dlq identity --replay   # move it back to identity.events

A replayed message starts its retries afresh; the consumer's inbox still drops any event that
was in fact handled before.
"""

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass

import aio_pika

from taskhub_common.bus import copy_message


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service")
    parser.add_argument("--replay", action="store_true")
    parser.add_argument(
        "--url", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1/")
    )
    args = parser.parse_args()
    if args.replay:
        count = asyncio.run(replay_dead_letters(args.url, args.service))
        sys.stdout.write(f"replayed {count} message(s) to {args.service}.events\n")
        return
    for letter in asyncio.run(inspect_dead_letters(args.url, args.service)):
        sys.stdout.write(json.dumps(letter.__dict__) + "\n")


if __name__ == "__main__":
    main()
