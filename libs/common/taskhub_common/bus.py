"""The event bus: RabbitMQ in the distributed mode, an in-process bus (local_bus.py) in the
embedded one.

Both give the same delivery semantics to a subscriber: at-least-once, bounded retries with
back-off, then a dead-letter queue. The subscriber's handler must be idempotent (the consumer's
inbox makes it so) and raises to ask for a retry.

A subscription with a batch handler gets the deliveries at hand (up to BATCH_SIZE, waiting at
most BATCH_LINGER_SECONDS for more) in one call, and a batch handled is acknowledged with one
frame (decision 0087); when that fails, each of them goes through the one-event handler, with
its own retries and dead letter (decision 0063).

An exclusive queue (a process's own, gone with it) is consumed a batch at a time too, without
the linger, and acknowledged once per BATCH_SIZE deliveries or ACK_SECONDS (decision 0077):
its messages are lost with the process anyway, so acknowledging each one buys nothing, while
the bounded prefetch still keeps a process that falls behind from buffering without end.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError
from pydantic import ValidationError

from taskhub_common.db import Database
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.tracing import handling, handling_batch

logger = logging.getLogger(__name__)

T = TypeVar("T")

Handler = Callable[[EventEnvelope], Awaitable[None]]
BatchHandler = Callable[[list[EventEnvelope]], Awaitable[None]]
# At most this many deliveries in one batch.
BATCH_SIZE = 100
# How long a batch that is not full waits for more deliveries: up to 20 ms of latency when
# idle, against a transaction per event whenever events come a few ms apart (a steady stream
# of requests, not only a burst; decision 0100).
BATCH_LINGER_SECONDS = 0.02
# An exclusive queue's handled deliveries are acknowledged together once this many are, or
# when none has come for this long: within the prefetch (2 * BATCH_SIZE), and well within the
# broker's consumer timeout.
ACK_SECONDS = 1.0
# What became of a delivery: its handler succeeded, failed and it waits for a retry, failed for
# the last time (or could not be read) and it went to the dead letters, or failed on a queue
# without retries.
OUTCOMES = ("handled", "retried", "dead_lettered", "dropped")


@dataclass(eq=False)
class Subscription:
    queue: str
    routing_keys: list[str]
    handler: Handler
    max_attempts: int
    retry_delays_ms: list[int]
    # A queue of this process alone, gone when it stops (no retries, no dead letters).
    exclusive: bool = False
    # The subscriber's database: where the in-process bus keeps its queue.
    database: Database | None = None
    # Told each delivery's outcome (one of OUTCOMES), for /metrics.
    on_outcome: Callable[[str], None] | None = None
    # Handles many events in one go (one transaction); `handler` still takes them one at a
    # time when a batch fails.
    batch_handler: BatchHandler | None = None

    def record(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def delay_ms(self, attempt: int) -> int:
        """Back-off before retry number `attempt` (1-based)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]

    async def handled_as_batch(self, envelopes: list[EventEnvelope]) -> bool:
        """All at once through the batch handler; False when the batch failed, and then each
        event goes to `handler` alone, with its own retries and dead letter (both buses)."""
        assert self.batch_handler is not None
        try:
            await self.batch_handler(envelopes)
        except Exception:
            logger.warning(
                "batch of %d on %s failed; handling them one at a time",
                len(envelopes),
                self.queue,
                exc_info=True,
            )
            return False
        for _ in envelopes:
            self.record("handled")
        return True


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An outbox row as the relay hands it over: the envelope's JSON as it was stored, published
    as it is (RabbitMQ) or read back into an envelope (the in-process bus)."""

    id: uuid.UUID
    type: str
    body: bytes
    headers: dict[str, str]


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, envelope: EventEnvelope, headers: dict[str, str]) -> None: ...
    # Each event's outcome, in order: None when published, else what failed.
    async def publish_many(
        self, events: list[tuple[EventEnvelope, dict[str, str]]]
    ) -> list[BaseException | None]: ...
    # The same for outbox rows (the relay): each row's outcome, in order.
    async def publish_stored(self, events: list[StoredEvent]) -> list[BaseException | None]: ...
    async def subscribe(self, subscription: Subscription) -> None: ...
    async def unsubscribe(self, subscription: Subscription) -> None: ...
    def is_ready(self) -> bool: ...


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""
    return _words_match(binding_key.split("."), routing_key.split("."))


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


class RabbitMQBus:
    """Topic exchange `taskhub.events`; durable queue per service with a ladder of delay queues
    for retries and a `.dlq`; persistent messages published with confirms."""

    def __init__(self, url: str, publish_timeout: float = 10.0, prefetch: int = 20) -> None:
        self.url = url
        self.publish_timeout = publish_timeout
        self.prefetch = prefetch
        self.connection: AbstractRobustConnection | None = None
        self._publish_exchange: aio_pika.abc.AbstractExchange | None = None
        self._subscriptions: list[Subscription] = []
        self._queues: list[aio_pika.abc.AbstractQueue] = []  # strong refs for robust recovery
        self._connected = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._batchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # Connect in the background: a service starts (and fills its outbox) while RabbitMQ is down.
        self._connector = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._connect_once()
                break
            except Exception as exc:
                # Whatever failed, keep trying: a connector that died would leave the service
                # never ready, its outbox filling up.
                logger.warning("RabbitMQ unreachable (%r); retrying in %.1fs", exc, delay)
                if self.connection is not None:
                    with contextlib.suppress(Exception):
                        await self.connection.close()
                    self.connection = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
        self._connected.set()
        logger.info("connected to RabbitMQ")

    async def _connect_once(self) -> None:
        async with asyncio.timeout(30):
            await self._open_and_declare()

    async def _open_and_declare(self) -> None:
        self.connection = await aio_pika.connect_robust(self.url, timeout=10)
        channel = await self.connection.channel(publisher_confirms=True)
        self._publish_exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for subscription in self._subscriptions:
            await self._declare_and_consume(subscription)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def close(self) -> None:
        if self._connector:
            self._connector.cancel()
        for batcher in self._batchers:
            batcher.cancel()
        if self.connection:
            # A half-open connection can make close() wait forever; shutdown must not.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.connection.close()

    def is_ready(self) -> bool:
        # A robust connection is not closed while it reconnects; `connected` is what is
        # cleared when the link drops and set again once it is back.
        return (
            self._connected.is_set()
            and self.connection is not None
            and not self.connection.is_closed
            and self.connection.connected.is_set()
        )

    async def publish(self, envelope: EventEnvelope, headers: dict[str, str]) -> None:
        (outcome,) = await self.publish_many([(envelope, headers)])
        if outcome is not None:
            raise outcome

    async def publish_many(
        self, events: list[tuple[EventEnvelope, dict[str, str]]]
    ) -> list[BaseException | None]:
        """Envelopes, serialised here, then as outbox rows are."""
        return await self.publish_stored(
            [
                StoredEvent(
                    envelope.id, envelope.type, envelope.model_dump_json().encode(), headers
                )
                for envelope, headers in events
            ]
        )

    async def publish_stored(self, events: list[StoredEvent]) -> list[BaseException | None]:
        """Outbox rows, their stored JSON as the bodies (nothing parsed or serialised again), all
        in flight at once on the channel itself, their confirms awaited together."""
        try:
            if not self.is_ready() or self._publish_exchange is None:
                raise ConnectionError("RabbitMQ is not connected")
            channel = await self._publish_exchange.channel.get_underlay_channel()
        except (ConnectionError, aiormq.exceptions.ChannelInvalidStateError) as exc:
            return [exc] * len(events)
        outcomes = await asyncio.gather(
            *(self.publish_body(channel, event) for event in events), return_exceptions=True
        )
        return [outcome if isinstance(outcome, BaseException) else None for outcome in outcomes]

    async def publish_body(self, channel: aiormq.abc.AbstractChannel, event: StoredEvent) -> None:
        """One persistent message, `message_id` the event's id. `wait=False`: the next publish
        need not wait for this one's frames to reach the socket (its confirm is still awaited,
        and a nack raises). The timeout matters: a publish can hang while the robust connection
        reconnects."""
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            message_id=str(event.id),
            message_type=event.type,
            headers=event.headers,
        )
        await channel.basic_publish(
            event.body,
            exchange=EXCHANGE,
            routing_key=event.type,
            properties=properties,
            timeout=self.publish_timeout,
            wait=False,
        )

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Nothing to do: closing the connection ends every consumer (the durable queues stay)."""

    async def subscribe(self, subscription: Subscription) -> None:
        self._subscriptions.append(subscription)
        if self._connected.is_set():
            await self._declare_and_consume(subscription)

    async def _declare_and_consume(self, subscription: Subscription) -> None:
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True)
        # A batched subscription has twice a batch in flight: the next one arrives meanwhile.
        batched = subscription.batch_handler is not None or subscription.exclusive
        await channel.set_qos(prefetch_count=2 * BATCH_SIZE if batched else self.prefetch)
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        if subscription.exclusive:
            queue = await channel.declare_queue(
                subscription.queue, exclusive=True, auto_delete=True
            )
        else:
            queue = await channel.declare_queue(subscription.queue, durable=True)
            self._queues.append(
                await channel.declare_queue(f"{subscription.queue}.dlq", durable=True)
            )
            for delay in subscription.retry_delays_ms:
                self._queues.append(
                    await channel.declare_queue(
                        retry_queue_name(subscription.queue, delay),
                        durable=True,
                        arguments={
                            "x-message-ttl": delay,
                            "x-dead-letter-exchange": "",
                            "x-dead-letter-routing-key": subscription.queue,
                        },
                    )
                )
        for key in subscription.routing_keys:
            await queue.bind(exchange, key)
        self._queues.append(queue)

        if not batched:

            async def on_message(message: AbstractIncomingMessage) -> None:
                await self._handle(channel, subscription, message)

            await queue.consume(on_message)
            return
        # One batcher per subscription takes the deliveries in order; robust recovery consumes
        # again into the same buffer.
        deliveries: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def on_delivery(message: AbstractIncomingMessage) -> None:
            deliveries.put_nowait(message)

        loop = self._exclusive_loop if subscription.exclusive else self._batch_loop
        self._batchers.append(
            asyncio.create_task(
                loop(channel, subscription, deliveries), name=f"batches of {subscription.queue}"
            )
        )
        await queue.consume(on_delivery)

    async def _batch_loop(
        self,
        channel: aio_pika.abc.AbstractChannel,
        subscription: Subscription,
        deliveries: asyncio.Queue[AbstractIncomingMessage],
    ) -> None:
        while True:
            batch = await take_batch(deliveries, BATCH_LINGER_SECONDS)
            try:
                await self._handle_batch(channel, subscription, batch)
            except Exception:
                # Never let the loop die: unacknowledged messages come back on a new channel.
                logger.exception("batch of %s not handled", subscription.queue)

    async def _exclusive_loop(
        self,
        channel: aio_pika.abc.AbstractChannel,
        subscription: Subscription,
        deliveries: asyncio.Queue[AbstractIncomingMessage],
    ) -> None:
        """Whatever is at hand, at once (the events are for live clients); the handled ones
        acknowledged together, whatever their outcome: nothing comes back on this queue."""
        unacked: list[AbstractIncomingMessage] = []
        while True:
            try:
                # Only the wait for the first delivery can time out: none is lost.
                async with asyncio.timeout(ACK_SECONDS if unacked else None):
                    batch = await take_batch(deliveries, 0.0)
            except TimeoutError:
                await _ack_all(unacked)
                unacked = []
                continue
            try:
                await self._handle_batch(channel, subscription, batch)
            except Exception:
                logger.exception("batch of %s not handled", subscription.queue)
            unacked.extend(batch)
            if len(unacked) >= BATCH_SIZE:
                await _ack_all(unacked)
                unacked = []

    async def _handle_batch(
        self,
        channel: aio_pika.abc.AbstractChannel,
        subscription: Subscription,
        messages: list[AbstractIncomingMessage],
    ) -> None:
        readable: list[AbstractIncomingMessage] = []
        envelopes: list[EventEnvelope] = []
        for message in messages:
            try:
                envelopes.append(EventEnvelope.model_validate_json(message.body))
                readable.append(message)
            except ValidationError:
                await self._handle(channel, subscription, message)  # dead-letters it
        if len(readable) == 1:
            await self._handle(channel, subscription, readable[0])
            return
        if not readable:
            return
        if subscription.batch_handler is None:
            for message in readable:
                await self._handle(channel, subscription, message)
            return
        with handling_batch(subscription.queue, [m.headers or {} for m in readable]):
            handled = await subscription.handled_as_batch(envelopes)
        if not handled:
            for message in readable:
                await self._handle(channel, subscription, message)
        elif not subscription.exclusive:
            # One frame for the batch: the deliveries before its last one on the channel are
            # this batch's or were settled already (batches are handled in delivery order).
            await _ack_all(readable)

    async def _handle(
        self,
        channel: aio_pika.abc.AbstractChannel,
        subscription: Subscription,
        message: AbstractIncomingMessage,
    ) -> None:
        attempt = int((message.headers or {}).get("x-attempt", 1))
        try:
            envelope = EventEnvelope.model_validate_json(message.body)
            # Its trace and request id, for the handler's spans and every log line of it.
            with handling(subscription.queue, message.routing_key or "", message.headers or {}):
                await subscription.handler(envelope)
            subscription.record("handled")
        except Exception as exc:
            poison = isinstance(exc, ValidationError)
            logger.warning(
                "handler of %s failed (attempt %d)", subscription.queue, attempt, exc_info=True
            )
            if poison or attempt >= subscription.max_attempts:
                target = f"{subscription.queue}.dlq"
            else:
                target = retry_queue_name(subscription.queue, subscription.delay_ms(attempt))
            headers = {
                **(message.headers or {}),
                "x-attempt": attempt + 1,
                "x-error": repr(exc)[:500],
            }
            if subscription.exclusive:
                # A per-replica fan-out queue has no retry ladder: its events are for live sockets.
                logger.error("dropping event for %s after failure", subscription.queue)
                subscription.record("dropped")
            else:
                try:
                    await channel.default_exchange.publish(
                        copy_message(message, headers),
                        routing_key=target,
                        timeout=self.publish_timeout,
                    )
                except Exception:
                    # A broker failure, not the message's fault: put it back as it was.
                    logger.warning("could not move a failed message to %s", target, exc_info=True)
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)
                    return
                subscription.record("dead_lettered" if target.endswith(".dlq") else "retried")
        if not subscription.exclusive:
            await _ack(message)


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except ChannelInvalidStateError:
        logger.warning("ack after a reconnect failed; the message will be redelivered")


async def _ack_all(messages: list[AbstractIncomingMessage]) -> None:
    """Acknowledge a batch with one frame per channel: its last delivery, `multiple` (those
    before it on the channel are this batch's or earlier ones'). A batch may span a reconnect:
    the old channel's deliveries went with it (a durable queue delivers them again, an exclusive
    one went too), nothing to do."""
    last: dict[int, AbstractIncomingMessage] = {}
    for message in messages:
        with contextlib.suppress(ChannelInvalidStateError):  # raised by a closed channel
            last[id(message.channel)] = message
    for message in last.values():
        try:
            await message.ack(multiple=True)
        except ChannelInvalidStateError:
            logger.info("ack after a reconnect failed; its deliveries went with the channel")


async def take_batch(items: asyncio.Queue[T], linger: float) -> list[T]:
    """The first item (waiting for it), then whatever follows within `linger`, up to
    BATCH_SIZE."""
    batch = [await items.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger
    while len(batch) < BATCH_SIZE:
        if not items.empty():
            batch.append(items.get_nowait())
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                batch.append(await items.get())
        except TimeoutError:
            break
    return batch


def copy_message(message: AbstractIncomingMessage, headers: dict) -> aio_pika.Message:
    """The same event as a new persistent message, with other headers (a retry, a replay)."""
    return aio_pika.Message(
        body=message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        headers=headers,
    )


def retry_queue_name(queue: str, delay_ms: int) -> str:
    return f"{queue}.retry.{delay_ms}ms"


def make_bus(rabbitmq_url: str | None) -> EventBus:
    """RabbitMQ when a URL is configured; otherwise the process-wide in-process bus, which every
    service of the embedded mode shares."""
    if rabbitmq_url:
        return RabbitMQBus(rabbitmq_url)
    # Imported here: the in-process bus builds on this module.
    from taskhub_common.local_bus import shared_bus

    return shared_bus
