"""The embedded mode's bus: what it must share with RabbitMQ beyond test_consumer's scenarios."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from taskhub_common.bus import Subscription
from taskhub_common.db import Database
from taskhub_common.events import EventEnvelope
from taskhub_common.local_bus import InProcessBus
from taskhub_common.outbox import event_queue


@pytest.fixture
async def bus() -> AsyncIterator[InProcessBus]:
    bus = InProcessBus()
    yield bus
    for queue in list(bus.queues.values()):
        for subscription in list(queue.subscriptions):
            await bus.unsubscribe(subscription)


def subscription(
    queue: str, handler, database: Database | None, max_attempts: int = 3
) -> Subscription:
    return Subscription(
        queue=queue,
        routing_keys=["thing.#"],
        handler=handler,
        max_attempts=max_attempts,
        retry_delays_ms=[60_000],
        database=database,
    )


def event() -> EventEnvelope:
    return EventEnvelope(type="thing.happened", producer="test")


async def queued(database: Database, queue: str) -> int:
    async with database.sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(event_queue).where(event_queue.c.queue == queue)
        )


async def test_publish_does_not_wait_for_a_failing_handler(
    bus: InProcessBus, database: Database
) -> None:
    """A consumer's back-off (a minute here) never holds up the producer's relay."""
    calls: list[uuid.UUID] = []

    async def failing(envelope: EventEnvelope) -> None:
        calls.append(envelope.id)
        raise RuntimeError("mail server down")

    name = f"slow_{uuid.uuid4().hex[:8]}.events"
    await bus.subscribe(subscription(name, failing, database))
    async with asyncio.timeout(2):
        for _ in range(5):
            await bus.publish(event(), {})
    async with asyncio.timeout(5):
        while len(calls) < 5:
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert len(calls) == 5, "each event tried once, its retry a minute away"
    # Kept, waiting for the retry: nothing is lost while the consumer fails.
    assert await queued(database, name) == 5


async def test_events_wait_in_the_table_until_handled(
    bus: InProcessBus, database: Database
) -> None:
    handled: list[uuid.UUID] = []
    gate = asyncio.Event()

    async def waits(envelope: EventEnvelope) -> None:
        await gate.wait()
        handled.append(envelope.id)

    name = f"table_{uuid.uuid4().hex[:8]}.events"
    await bus.subscribe(subscription(name, waits, database))
    published = [event() for _ in range(3)]
    for envelope in published:
        await bus.publish(envelope, {})
    assert await queued(database, name) == 3
    gate.set()
    async with asyncio.timeout(5):
        while await queued(database, name):
            await asyncio.sleep(0.02)
    assert handled == [envelope.id for envelope in published]


async def test_held_publishing_waits_for_release(bus: InProcessBus, database: Database) -> None:
    """The embedded runner holds publishing until every service has subscribed."""
    handled: list[uuid.UUID] = []

    async def record(envelope: EventEnvelope) -> None:
        handled.append(envelope.id)

    bus.hold()
    early = event()
    publishing = asyncio.create_task(bus.publish(early, {}))
    await asyncio.sleep(0.1)
    assert not publishing.done()
    await bus.subscribe(subscription(f"late_{uuid.uuid4().hex[:8]}.events", record, database))
    bus.release()
    await asyncio.wait_for(publishing, 2)
    async with asyncio.timeout(5):
        while early.id not in handled:
            await asyncio.sleep(0.02)


async def test_a_second_app_takes_the_queue_and_gives_it_back(
    bus: InProcessBus, database: Database
) -> None:
    first: list[uuid.UUID] = []
    second: list[uuid.UUID] = []

    async def to_first(envelope: EventEnvelope) -> None:
        first.append(envelope.id)

    async def to_second(envelope: EventEnvelope) -> None:
        second.append(envelope.id)

    name = f"shared_{uuid.uuid4().hex[:8]}.events"
    original = subscription(name, to_first, database)
    await bus.subscribe(original)
    replacement = subscription(name, to_second, database)
    await bus.subscribe(replacement)
    one = event()
    await bus.publish(one, {})
    async with asyncio.timeout(5):
        while one.id not in second:
            await asyncio.sleep(0.02)
    await bus.unsubscribe(replacement)
    two = event()
    await bus.publish(two, {})
    async with asyncio.timeout(5):
        while two.id not in first:
            await asyncio.sleep(0.02)
    assert first == [two.id] and second == [one.id]


async def test_a_memory_queue_delivers_without_a_database(bus: InProcessBus) -> None:
    received: list[uuid.UUID] = []

    async def record(envelope: EventEnvelope) -> None:
        received.append(envelope.id)

    await bus.subscribe(subscription(f"gateway.{uuid.uuid4().hex[:8]}", record, None))
    sent = [event() for _ in range(3)]
    for envelope in sent:
        await bus.publish(envelope, {})
    async with asyncio.timeout(5):
        while len(received) < 3:
            await asyncio.sleep(0.02)
    assert received == [envelope.id for envelope in sent]
