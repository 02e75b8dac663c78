"""The event bus: RabbitMQ in the distributed mode, an in-process bus (local_bus.py) in the
embedded one.

Both give the same delivery semantics to a subscriber: at-least-once, bounded retries with
back-off, then a dead-letter queue. The subscriber's handler must be idempotent (the consumer's
inbox makes it so) and raises to ask for a retry.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError
from pydantic import ValidationError

from taskhub_common.db import Database
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.tracing import handling

logger = logging.getLogger(__name__)

Handler = Callable[[EventEnvelope], Awaitable[None]]
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

    def record(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def delay_ms(self, attempt: int) -> int:
        """Back-off before retry number `attempt` (1-based)."""
        return self.retry_delays_ms[min(attempt, len(self.retry_delays_ms)) - 1]


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, envelope: EventEnvelope, headers: dict[str, str]) -> None: ...
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
        if not self.is_ready() or self._publish_exchange is None:
            raise ConnectionError("RabbitMQ is not connected")
        message = aio_pika.Message(
            body=envelope.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(envelope.id),
            type=envelope.type,
            headers=dict(headers),
        )
        # The timeout matters: a publish can hang while the robust connection reconnects.
        await self._publish_exchange.publish(
            message, routing_key=envelope.type, mandatory=False, timeout=self.publish_timeout
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
        await channel.set_qos(prefetch_count=self.prefetch)
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

        async def on_message(message: AbstractIncomingMessage) -> None:
            # Its trace and request id, for the handler's spans and every log line of it.
            with handling(subscription.queue, message.routing_key or "", message.headers or {}):
                await self._handle(channel, subscription, message)

        await queue.consume(on_message)

    async def _handle(
        self,
        channel: aio_pika.abc.AbstractChannel,
        subscription: Subscription,
        message: AbstractIncomingMessage,
    ) -> None:
        attempt = int((message.headers or {}).get("x-attempt", 1))
        try:
            envelope = EventEnvelope.model_validate_json(message.body)
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
        try:
            await message.ack()
        except ChannelInvalidStateError:
            logger.warning("ack after a reconnect failed; the message will be redelivered")


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
