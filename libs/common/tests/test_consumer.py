"""Consuming events: inbox de-duplication, bounded retries, dead-letter queue.

The same scenarios run on RabbitMQ and on the embedded mode's in-process bus."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from sqlalchemy import func, insert, select, text

from taskhub_common.bus import BATCH_SIZE, EventBus, RabbitMQBus, retry_queue_name, take_batch
from taskhub_common.consumer import EventConsumer, EventContext
from taskhub_common.db import Database
from taskhub_common.dlq import (
    inspect_dead_letters,
    inspect_local_dead_letters,
    replay_dead_letters,
    replay_local_dead_letters,
)
from taskhub_common.events import EventEnvelope
from taskhub_common.local_bus import InProcessBus
from taskhub_common.outbox import inbox
from taskhub_common.testing import RABBITMQ_URL

RETRY_DELAYS_MS = [100, 200]
MAX_ATTEMPTS = 3


@pytest.fixture(params=["rabbitmq", "in-process"])
async def bus(request) -> AsyncIterator[EventBus]:
    bus: EventBus = RabbitMQBus(RABBITMQ_URL) if request.param == "rabbitmq" else InProcessBus()
    await bus.start()
    if isinstance(bus, RabbitMQBus):
        async with asyncio.timeout(30):
            await bus.wait_connected()
    yield bus
    await bus.close()
    if isinstance(bus, InProcessBus):  # a bus of this test alone: stop its workers
        for queue in list(bus.queues.values()):
            for subscription in list(queue.subscriptions):
                await bus.unsubscribe(subscription)


@pytest.fixture
def service() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
async def delete_queues(service: str) -> AsyncIterator[None]:
    """Durable test queues would pile up in the broker run after run."""
    yield
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        base = f"{service}.events"
        names = [base, f"{base}.dlq", *(retry_queue_name(base, ms) for ms in RETRY_DELAYS_MS)]
        for name in names:
            await channel.queue_delete(name)


async def until(condition, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def handled_count(database: Database, handled_table, event_id: uuid.UUID) -> int:
    async with database.sessionmaker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(handled_table)
            .where(handled_table.c.event_id == event_id)
        )


async def subscribe(
    bus: EventBus, service: str, database: Database, handler, outcomes: list[str] | None = None
) -> str:
    event_type = f"{service}.happened"
    consumer = EventConsumer(service, database, {event_type: handler})
    on_outcome = outcomes.append if outcomes is not None else None
    await consumer.subscribe(bus, MAX_ATTEMPTS, RETRY_DELAYS_MS, on_outcome=on_outcome)
    return event_type


async def dead_letters(bus: EventBus, service: str, database: Database) -> list[uuid.UUID]:
    """Ids of what ended in the dead-letter queue `<service>.events.dlq` (or, in process, in the
    service's event_queue table as dead)."""
    if isinstance(bus, InProcessBus):
        letters = await inspect_local_dead_letters(database, service)
        return [uuid.UUID(letter.event_id) for letter in letters]
    return [
        uuid.UUID(letter.event_id) for letter in await inspect_dead_letters(RABBITMQ_URL, service)
    ]


async def test_duplicate_delivery_is_handled_once(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    async def record(ctx: EventContext) -> None:
        await ctx.session.execute(insert(handled_table).values(event_id=ctx.event.id, note="once"))

    event_type = await subscribe(bus, service, database, record)
    event = EventEnvelope(type=event_type, producer="backbone")
    await bus.publish(event, {})
    await bus.publish(event, {})  # the relay may publish twice after a crash

    async def inbox_has_it() -> bool:
        async with database.sessionmaker() as session:
            return bool(
                await session.scalar(select(inbox.c.event_id).where(inbox.c.event_id == event.id))
            )

    await until(inbox_has_it)
    await asyncio.sleep(0.5)  # room for the duplicate to be (not) handled
    assert await handled_count(database, handled_table, event.id) == 1


async def test_failing_handler_ends_in_dead_letter_queue_after_max_attempts(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    attempts: list[uuid.UUID] = []

    async def always_fails(ctx: EventContext) -> None:
        attempts.append(ctx.event.id)
        await ctx.session.execute(
            insert(handled_table).values(event_id=ctx.event.id, note="rolled back")
        )
        raise RuntimeError("handler bug")

    outcomes: list[str] = []
    event_type = await subscribe(bus, service, database, always_fails, outcomes)
    event = EventEnvelope(type=event_type, producer="backbone")
    publishing = asyncio.create_task(bus.publish(event, {}))

    async def dead_lettered() -> bool:
        return event.id in await dead_letters(bus, service, database)

    await until(dead_lettered)
    await publishing

    async def last_outcome_counted() -> bool:
        # Counted once the dead letter's publish is confirmed, which may follow its arrival.
        return len(outcomes) >= MAX_ATTEMPTS

    await until(last_outcome_counted)
    await asyncio.sleep(0.5)  # time for an attempt too many
    assert attempts == [event.id] * MAX_ATTEMPTS
    # What /metrics counts (taskhub_events_total by outcome).
    assert outcomes == ["retried"] * (MAX_ATTEMPTS - 1) + ["dead_lettered"]
    # Each failed attempt rolled back its writes and its inbox row.
    assert await handled_count(database, handled_table, event.id) == 0


async def test_handler_that_fails_once_succeeds_on_retry(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    calls = 0

    async def flaky(ctx: EventContext) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("transient")
        await ctx.session.execute(
            insert(handled_table).values(event_id=ctx.event.id, note="retried")
        )

    outcomes: list[str] = []
    event_type = await subscribe(bus, service, database, flaky, outcomes)
    event = EventEnvelope(type=event_type, producer="backbone")
    await bus.publish(event, {})

    async def handled() -> bool:
        return await handled_count(database, handled_table, event.id) == 1

    await until(handled)
    assert calls == 2

    async def both_counted() -> bool:  # the count follows the handler's commit
        return len(outcomes) == 2

    await until(both_counted)
    assert outcomes == ["retried", "handled"]
    assert await dead_letters(bus, service, database) == []


async def test_events_without_a_handler_are_ignored(
    bus: EventBus, service: str, database: Database
) -> None:
    consumer = EventConsumer(service, database, {})
    await consumer.process(EventEnvelope(type="nobody.cares", producer="backbone"))
    async with database.sessionmaker() as session:
        assert (
            await session.scalar(
                select(func.count()).select_from(inbox).where(inbox.c.consumer == consumer.queue)
            )
            == 0
        )


async def test_dead_letters_can_be_inspected_and_replayed(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    fixed = False

    async def fails_until_fixed(ctx: EventContext) -> None:
        if not fixed:
            raise RuntimeError("bug, fixed in the next release")
        await ctx.session.execute(
            insert(handled_table).values(event_id=ctx.event.id, note="replayed")
        )

    event_type = await subscribe(bus, service, database, fails_until_fixed)
    event = EventEnvelope(type=event_type, producer="backbone")
    await bus.publish(event, {})

    async def dead_lettered() -> bool:
        return event.id in await dead_letters(bus, service, database)

    await until(dead_lettered)
    in_process = isinstance(bus, InProcessBus)
    letters = await (
        inspect_local_dead_letters(database, service)
        if in_process
        else inspect_dead_letters(RABBITMQ_URL, service)
    )
    assert [(letter.event_type, letter.attempts) for letter in letters] == [
        (event_type, MAX_ATTEMPTS)
    ]
    assert "bug, fixed" in letters[0].error
    assert await dead_letters(bus, service, database) == [event.id], "inspecting must not take"

    fixed = True
    replayed = await (
        replay_local_dead_letters(database, service)
        if in_process
        else replay_dead_letters(RABBITMQ_URL, service)
    )
    assert replayed == 1

    async def handled() -> bool:
        return await handled_count(database, handled_table, event.id) == 1

    await until(handled)
    assert await dead_letters(bus, service, database) == []


async def test_a_burst_is_handled_in_batches_in_order(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    """Events published together share transactions (fewer than one each), and each reaches
    its handler once, in publishing order."""
    seen: list[uuid.UUID] = []
    # The first event waits for the whole burst to be published, so the rest piles up behind
    # it as under load, rather than trickling in at the publisher's pace on a busy machine.
    published = asyncio.Event()

    async def record(ctx: EventContext) -> None:
        await published.wait()
        seen.append(ctx.event.id)
        transaction = await ctx.session.scalar(text("SELECT txid_current()::text"))
        await ctx.session.execute(
            insert(handled_table).values(event_id=ctx.event.id, note=transaction)
        )

    event_type = await subscribe(bus, service, database, record)
    events = [EventEnvelope(type=event_type, producer="backbone") for _ in range(50)]
    outcomes = await bus.publish_many([(event, {}) for event in events])
    published.set()
    assert outcomes == [None] * len(events)
    ids = [event.id for event in events]

    async def all_handled() -> bool:
        return await notes(database, handled_table, ids) is not None

    await until(all_handled)
    assert seen == ids
    transactions = await notes(database, handled_table, ids)
    assert transactions is not None
    assert len(set(transactions)) < len(events) / 2, "a transaction per event: no batching"


async def notes(database: Database, handled_table, ids: list[uuid.UUID]) -> list[str] | None:
    """The note of each event's row, once every one has exactly one."""
    async with database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(handled_table.c.event_id, handled_table.c.note).where(
                    handled_table.c.event_id.in_(ids)
                )
            )
        ).all()
    if sorted(row.event_id for row in rows) != sorted(ids):
        return None
    return [row.note for row in rows]


async def test_a_bad_event_in_a_batch_is_dead_lettered_alone(
    bus: EventBus, service: str, database: Database, handled_table
) -> None:
    """The batch falls back to one event at a time: the others land once, the bad one goes
    through its retries to the dead letters by itself."""
    bad = EventEnvelope(type=f"{service}.happened", producer="backbone")
    events = [EventEnvelope(type=bad.type, producer="backbone") for _ in range(20)]
    events.insert(10, bad)

    async def fails_on_bad(ctx: EventContext) -> None:
        await ctx.session.execute(insert(handled_table).values(event_id=ctx.event.id, note="ok"))
        if ctx.event.id == bad.id:
            raise RuntimeError("poison")

    outcomes: list[str] = []
    await subscribe(bus, service, database, fails_on_bad, outcomes)
    await bus.publish_many([(event, {}) for event in events])

    async def dead_lettered() -> bool:
        return bad.id in await dead_letters(bus, service, database)

    await until(dead_lettered)
    good = [event.id for event in events if event.id != bad.id]

    async def every_outcome_counted() -> bool:
        # The dead letter's outcome is counted once its publish is confirmed.
        return len(outcomes) >= len(good) + MAX_ATTEMPTS

    await until(every_outcome_counted)
    assert await notes(database, handled_table, good) == ["ok"] * len(good)
    assert await handled_count(database, handled_table, bad.id) == 0
    assert await dead_letters(bus, service, database) == [bad.id]
    assert sorted(outcomes) == sorted(
        ["handled"] * len(good) + ["retried"] * (MAX_ATTEMPTS - 1) + ["dead_lettered"]
    )


async def test_a_batch_handler_takes_runs_of_its_events_and_drops_duplicates(
    database: Database, service: str
) -> None:
    """Consecutive events of a batch handler's types go to it at once, the others to their own
    handler between them, in order; an event twice in a batch, or handled before, runs once."""
    calls: list[list[str]] = []

    async def many(contexts: list[EventContext]) -> None:
        calls.append([ctx.event.type for ctx in contexts])

    async def one(ctx: EventContext) -> None:
        calls.append([ctx.event.type])

    consumer = EventConsumer(service, database, {"b": one}, batch_handlers={"a": many, "c": many})
    events = [EventEnvelope(type=kind, producer="backbone") for kind in "aacbca"]
    again = events[0]
    await consumer.process(again)
    calls.clear()
    await consumer.process_batch([*events, events[1], EventEnvelope(type="x", producer="p")])
    assert calls == [["a", "c"], ["b"], ["c", "a"]]


async def test_a_batch_waits_the_linger_for_company_and_no_longer() -> None:
    """What follows the first delivery within the linger joins its batch; what comes later
    starts the next one; a full batch goes at once, whatever the linger."""
    items: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    items.put_nowait(0)
    loop.call_later(0.01, items.put_nowait, 1)
    loop.call_later(0.6, items.put_nowait, 2)
    assert await take_batch(items, 0.3) == [0, 1]
    assert await take_batch(items, 0.0) == [2]
    for i in range(BATCH_SIZE + 1):
        items.put_nowait(i)
    started = loop.time()
    assert await take_batch(items, 10.0) == list(range(BATCH_SIZE))
    assert loop.time() - started < 1
    assert items.qsize() == 1  # the next batch's


async def test_a_process_queue_takes_bursts_in_order_acknowledged_together(
    service: str,
) -> None:
    """Without a database (the gateway): a burst larger than the queue's prefetch reaches the
    batch handler whole, in order, in fewer calls than events, so its deliveries were
    acknowledged (many at once) or the prefetch would have stopped it; an event that fails
    is dropped alone (no retries on a process's own queue), and acknowledged too."""
    bus = RabbitMQBus(RABBITMQ_URL)
    await bus.start()
    try:
        async with asyncio.timeout(30):
            await bus.wait_connected()
        event_type = f"{service}.happened"
        events = [
            EventEnvelope(type=event_type, producer="backbone") for _ in range(3 * BATCH_SIZE)
        ]
        bad = events[BATCH_SIZE + 7]
        calls: list[list[uuid.UUID]] = []
        # As above: the burst piles up behind the first call whatever the machine's pace.
        published = asyncio.Event()

        async def many(contexts: list[EventContext]) -> None:
            await published.wait()
            ids = [ctx.event.id for ctx in contexts]
            if bad.id in ids:
                raise RuntimeError("poison")
            calls.append(ids)

        outcomes: list[str] = []
        consumer = EventConsumer(service, None, {}, batch_handlers={event_type: many})
        await consumer.subscribe(bus, MAX_ATTEMPTS, RETRY_DELAYS_MS, on_outcome=outcomes.append)
        assert await bus.publish_many([(event, {}) for event in events]) == [None] * len(events)
        published.set()

        async def all_seen() -> bool:
            return len(outcomes) == len(events)

        await until(all_seen)
        assert [i for ids in calls for i in ids] == [e.id for e in events if e.id != bad.id]
        assert len(calls) < len(events) / 2, "an event per call: no batching"
        assert sorted(outcomes) == sorted(["handled"] * (len(events) - 1) + ["dropped"])
    finally:
        await bus.close()


async def test_a_durable_queue_acknowledges_a_batch_handled_at_once(
    service: str, database: Database, handled_table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst larger than the prefetch through a batch handler on a durable queue: every event
    handled once, in fewer acknowledgements than events (one per batch), and none left
    unacknowledged: once the bus is closed, the queue holds nothing to deliver again."""
    acks: list[bool] = []
    ack = aio_pika.IncomingMessage.ack

    async def counted_ack(message: aio_pika.IncomingMessage, multiple: bool = False) -> None:
        acks.append(multiple)
        await ack(message, multiple=multiple)

    monkeypatch.setattr(aio_pika.IncomingMessage, "ack", counted_ack)
    event_type = f"{service}.happened"
    events = [EventEnvelope(type=event_type, producer="backbone") for _ in range(3 * BATCH_SIZE)]

    sizes: list[int] = []
    # As above: the burst piles up behind the first batch whatever the machine's pace.
    published = asyncio.Event()

    async def many(contexts: list[EventContext]) -> None:
        await published.wait()
        sizes.append(len(contexts))
        await contexts[0].session.execute(
            insert(handled_table),
            [{"event_id": ctx.event.id, "note": "batch"} for ctx in contexts],
        )

    bus = RabbitMQBus(RABBITMQ_URL)
    await bus.start()
    try:
        async with asyncio.timeout(30):
            await bus.wait_connected()
        consumer = EventConsumer(service, database, {}, batch_handlers={event_type: many})
        await consumer.subscribe(bus, MAX_ATTEMPTS, RETRY_DELAYS_MS)
        assert await bus.publish_many([(event, {}) for event in events]) == [None] * len(events)
        published.set()
        ids = [event.id for event in events]

        async def all_handled() -> bool:
            return await notes(database, handled_table, ids) is not None

        await until(all_handled)

        async def all_acknowledged() -> bool:
            # The last batch's acknowledgement follows its commit.
            return len(acks) >= len(sizes)

        await until(all_acknowledged)
    finally:
        await bus.close()
    assert 0 < len(acks) < len(events) / 10, "an acknowledgement per event"
    # Each batch with one frame, `multiple`; a delivery that came alone (a slow machine's
    # first one, say) takes the one-event way, with an acknowledgement of its own.
    assert acks == [size > 1 for size in sizes], "a batch is acknowledged with one frame"
    assert any(acks)
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        queue = await (await connection.channel()).declare_queue(f"{service}.events", passive=True)
        assert queue.declaration_result.message_count == 0
