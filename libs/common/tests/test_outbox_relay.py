"""The outbox relay against real PostgreSQL and RabbitMQ."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import aio_pika
import pytest
from aiormq.abc import AbstractChannel
from sqlalchemy import func, insert, select, text, update

from taskhub_common.bus import RabbitMQBus, StoredEvent
from taskhub_common.db import Database
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.idempotency import idempotency_keys
from taskhub_common.logs import request_id_var
from taskhub_common.outbox import OutboxRelay, add_event, add_events, inbox, outbox
from taskhub_common.outbox import metadata as outbox_metadata
from taskhub_common.settings import ServiceSettings
from taskhub_common.testing import PG_HOST, PG_PORT, PG_USER, RABBITMQ_URL, TcpProxy


class Listener:
    """A temporary queue on the real broker that collects the events of one routing key."""

    def __init__(self, routing_key: str) -> None:
        self.routing_key = routing_key
        self.received: list[EventEnvelope] = []
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> "Listener":
        self.connection = await aio_pika.connect_robust(RABBITMQ_URL, timeout=10)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, self.routing_key)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                self.received.append(EventEnvelope.model_validate_json(message.body))
                self.arrived.set()

        await queue.consume(collect)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        """Until `count` distinct events arrived: delivery is at least once, so after a
        reconnect a duplicate may come first and must not count as another event."""
        async with asyncio.timeout(timeout):
            while len({event.id for event in self.received}) < count:
                self.arrived.clear()
                await self.arrived.wait()


def through(proxy: TcpProxy) -> str:
    """RABBITMQ_URL by way of the proxy: same credentials and virtual host, the proxy's port."""
    url = urlsplit(RABBITMQ_URL)
    return url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}").geturl()


def new_event(routing_key: str) -> EventEnvelope:
    return EventEnvelope(type=routing_key, producer="backbone", aggregate_id=uuid.uuid4())


async def is_sent(database: Database, event_id: uuid.UUID) -> bool:
    async with database.sessionmaker() as session:
        sent_at = await session.scalar(select(outbox.c.sent_at).where(outbox.c.id == event_id))
    return sent_at is not None


async def wait_until_sent(database: Database, event_id: uuid.UUID, timeout: float = 10) -> None:
    """The broker's confirm comes before the relay's commit: the row is marked a moment later."""
    async with asyncio.timeout(timeout):
        while not await is_sent(database, event_id):
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_relay(database: Database, bus: RabbitMQBus) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(database, bus, poll_seconds=0.2)
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
        await bus.close()


async def test_committed_event_is_published_with_its_envelope(database: Database) -> None:
    key = f"test.{uuid.uuid4().hex}.created"
    bus = RabbitMQBus(RABBITMQ_URL)
    await bus.start()
    async with Listener(key) as listener, running_relay(database, bus):
        event = new_event(key)
        async with database.sessionmaker.begin() as session:
            await add_event(session, event)
        await listener.wait_for(1)
        await wait_until_sent(database, event.id)
    assert listener.received == [event]


async def test_a_row_is_published_as_stored_with_the_message_properties(
    database: Database,
) -> None:
    """The relay sends the stored JSON as it is (no parse and dump on the way): the body reads
    back as the envelope written, and the message says what it is, as `publish` would."""
    key = f"test.{uuid.uuid4().hex}.created"
    connection = await aio_pika.connect_robust(RABBITMQ_URL, timeout=10)
    bus = RabbitMQBus(RABBITMQ_URL)
    await bus.start()
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, key)
        event = new_event(key)
        event.data = {"title": 'a "quoted" ünï title', "tags": [{"name": "x"}], "due_date": None}
        token = request_id_var.set("req-stored")
        try:
            async with database.sessionmaker.begin() as session:
                await add_event(session, event)
        finally:
            request_id_var.reset(token)
        await bus.wait_connected()
        assert await OutboxRelay(database, bus).publish_batch() >= 1
        async with asyncio.timeout(10):
            while (message := await queue.get(fail=False)) is None:
                await asyncio.sleep(0.05)
        await message.ack()
    finally:
        await bus.close()
        await connection.close()
    assert EventEnvelope.model_validate_json(message.body) == event
    assert message.message_id == str(event.id)
    assert message.type == message.routing_key == key
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["x-request-id"] == "req-stored"
    assert await is_sent(database, event.id)


async def test_events_written_together_are_rows_in_their_order(database: Database) -> None:
    """One statement for the batch: each event its own row, its envelope intact, the positions
    (the relay's oldest-first order) as the list gave them."""
    events = [new_event(f"test.{uuid.uuid4().hex}.created") for _ in range(50)]
    events[7].data = {"title": 'a "quoted" title', "tags": [{"name": "ünï"}]}
    async with database.sessionmaker.begin() as session:
        await add_events(session, events)
    async with database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.id, outbox.c.routing_key, outbox.c.payload)
                .where(outbox.c.id.in_([event.id for event in events]))
                .order_by(outbox.c.position)
            )
        ).all()
    assert [row.id for row in rows] == [event.id for event in events]
    assert [row.routing_key for row in rows] == [event.type for event in events]
    assert [EventEnvelope.model_validate(row.payload) for row in rows] == events


async def test_rolled_back_event_is_never_published(database: Database) -> None:
    key = f"test.{uuid.uuid4().hex}.created"
    bus = RabbitMQBus(RABBITMQ_URL)
    await bus.start()
    async with Listener(key) as listener, running_relay(database, bus):
        rolled_back = new_event(key)
        async with database.sessionmaker() as session:
            await add_event(session, rolled_back)
            await session.rollback()
        committed = new_event(key)
        async with database.sessionmaker.begin() as session:
            await add_event(session, committed)
        await listener.wait_for(1)
        await asyncio.sleep(0.5)
    assert [event.id for event in listener.received] == [committed.id]
    async with database.sessionmaker() as session:
        assert (
            await session.scalar(select(outbox.c.id).where(outbox.c.id == rolled_back.id)) is None
        )


async def test_event_committed_while_broker_unreachable_is_published_when_it_is_back(
    database: Database,
) -> None:
    key = f"test.{uuid.uuid4().hex}.created"
    proxy = TcpProxy(5672)
    proxy.start()
    proxy.stop()  # RabbitMQ is unreachable from the start
    bus = RabbitMQBus(through(proxy), publish_timeout=2)
    await bus.start()
    async with Listener(key) as listener, running_relay(database, bus):
        events = [new_event(key) for _ in range(3)]
        for event in events:
            async with database.sessionmaker.begin() as session:
                await add_event(session, event)
        await asyncio.sleep(1.5)
        assert listener.received == []
        assert not await is_sent(database, events[0].id)
        proxy.start()
        await listener.wait_for(3)
        for event in events:
            await wait_until_sent(database, event.id)
    assert [event.id for event in listener.received] == [event.id for event in events]
    proxy.stop()


async def test_connection_lost_mid_work_loses_nothing(database: Database) -> None:
    key = f"test.{uuid.uuid4().hex}.created"
    proxy = TcpProxy(5672)
    proxy.start()
    bus = RabbitMQBus(through(proxy), publish_timeout=2)
    await bus.start()
    async with Listener(key) as listener, running_relay(database, bus):
        before = new_event(key)
        async with database.sessionmaker.begin() as session:
            await add_event(session, before)
        await listener.wait_for(1)
        proxy.stop()  # the broker connection drops while the service keeps working
        during = [new_event(key) for _ in range(5)]
        for event in during:
            async with database.sessionmaker.begin() as session:
                await add_event(session, event)
        await asyncio.sleep(1)
        proxy.start()
        await listener.wait_for(6)
    received = {event.id for event in listener.received}
    assert received == {before.id, *(event.id for event in during)}
    proxy.stop()


class RefusingBus(RabbitMQBus):
    """The real bus, except that the broker is made to refuse one event."""

    def __init__(self, url: str, refused: uuid.UUID) -> None:
        super().__init__(url)
        self.refused = refused

    async def publish_body(self, channel: AbstractChannel, event: StoredEvent) -> None:
        if event.id == self.refused:
            raise ConnectionError("nacked")
        await super().publish_body(channel, event)


async def test_a_batch_marks_sent_only_what_the_broker_confirmed(database: Database) -> None:
    key = f"test.{uuid.uuid4().hex}.created"
    events = [new_event(key) for _ in range(5)]
    refused = events[2]
    bus = RefusingBus(RABBITMQ_URL, refused.id)
    await bus.start()
    try:
        async with Listener(key) as listener:
            async with database.sessionmaker.begin() as session:
                await add_events(session, events)
            await bus.wait_connected()
            relay = OutboxRelay(database, bus, batch_size=1000)
            with pytest.raises(ConnectionError):
                await relay.publish_batch()
            await listener.wait_for(4)
    finally:
        await bus.close()
    assert {event.id for event in listener.received} == {e.id for e in events} - {refused.id}
    assert [await is_sent(database, event.id) for event in events] == [
        True,
        True,
        False,
        True,
        True,
    ]


async def test_prune_drops_only_old_sent_and_processed_rows(database: Database) -> None:
    old_sent, recent_sent, unsent = (new_event(f"test.{uuid.uuid4().hex}.x") for _ in range(3))
    old_processed, recent_processed = uuid.uuid4(), uuid.uuid4()
    async with database.sessionmaker.begin() as session:
        for event in (old_sent, recent_sent, unsent):
            await add_event(session, event)
        await session.execute(
            update(outbox)
            .where(outbox.c.id == old_sent.id)
            .values(sent_at=func.now() - timedelta(minutes=2))
        )
        await session.execute(
            update(outbox).where(outbox.c.id == recent_sent.id).values(sent_at=func.now())
        )
        await session.execute(
            insert(inbox).values(
                consumer="prune",
                event_id=old_processed,
                processed_at=func.now() - timedelta(days=31),
            )
        )
        await session.execute(insert(inbox).values(consumer="prune", event_id=recent_processed))
        for key, age in (("old", timedelta(hours=25)), ("recent", timedelta(hours=23))):
            await session.execute(
                insert(idempotency_keys).values(
                    caller="prune",
                    key=key,
                    request_hash=b"",
                    status_code=204,
                    headers={},
                    body=b"",
                    created_at=func.now() - age,
                )
            )
    # Unsent rows must stay whatever their age; the relay is not running, so this one is.
    relay = OutboxRelay(database, RabbitMQBus(RABBITMQ_URL))
    await relay.prune()
    async with database.sessionmaker() as session:
        ids = set(
            await session.scalars(
                select(outbox.c.id).where(outbox.c.id.in_([old_sent.id, recent_sent.id, unsent.id]))
            )
        )
        processed = set(
            await session.scalars(select(inbox.c.event_id).where(inbox.c.consumer == "prune"))
        )
        keys = set(
            await session.scalars(
                select(idempotency_keys.c.key).where(idempotency_keys.c.caller == "prune")
            )
        )
    assert ids == {recent_sent.id, unsent.id}
    assert processed == {recent_processed}
    assert keys == {"recent"}  # idempotency keys are kept 24 hours


async def test_prune_in_a_service_without_idempotency_keys(database: Database) -> None:
    """Analytics has no write routes and so no idempotency_keys table: its relay's prune
    used to fail there, and the relay backed off up to 30 s between batches."""
    readonly = Database(
        ServiceSettings(
            SERVICE_NAME="readonly",
            DB_HOST=PG_HOST,
            DB_PORT=PG_PORT,
            DB_USER=PG_USER,
            DB_NAME=database.engine.url.database,
        )
    )
    try:
        async with readonly.engine.begin() as connection:
            await connection.execute(text('DROP SCHEMA IF EXISTS "readonly" CASCADE'))
            await connection.execute(text('CREATE SCHEMA "readonly"'))
            await connection.run_sync(outbox_metadata.create_all)
        await OutboxRelay(readonly, RabbitMQBus(RABBITMQ_URL)).prune()
    finally:
        await readonly.dispose()
