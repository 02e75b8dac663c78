"""The embedded mode's event bus: RabbitMQ's delivery semantics inside one process.

As on RabbitMQ, publishing and handling are decoupled: publish() only puts the event on each
subscriber's queue and returns, so a producer's relay never waits for a slow or failing
consumer. A consumer's queue is a table (`event_queue`) in the consumer's own schema, written
before publish() returns, so an event the relay marks sent is never lost, whatever crashes
next; a batch of events (the relay's) goes to each queue in one statement. One worker per
queue takes due rows (oldest first, SKIP LOCKED), hands them to the subscription's batch
handler at once (or, without one or when the batch fails, to its handler one at a time), and
deletes them; a failure is retried after the subscription's back-off and, after the last
attempt, kept in the table as a dead letter (`dead_at`), which `make dlq` lists and replays.

A subscription without a database (a process's own fan-out queue) lives in memory, like
RabbitMQ's exclusive queues: no retries, nothing kept across restarts.

Every subscription must exist before any relay publishes, as RabbitMQ's durable queues do:
the embedded runner holds publishing until every service has started (hold()/release()).
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.bus import StoredEvent, Subscription, topic_matches
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import event_queue

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
# A retry that falls due is noticed within this, even when nothing new is published.
POLL_SECONDS = 0.5
MEMORY_QUEUE_SIZE = 10_000


@dataclass
class _Queue:
    """One named queue: its subscriptions (the newest is served: an app started again in the
    same process takes over, and gives it back when it stops) and its worker."""

    name: str
    subscriptions: list[Subscription] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    memory: asyncio.Queue[EventEnvelope] = field(
        default_factory=lambda: asyncio.Queue(MEMORY_QUEUE_SIZE)
    )
    worker: asyncio.Task[None] | None = None

    @property
    def active(self) -> Subscription | None:
        return self.subscriptions[-1] if self.subscriptions else None


class InProcessBus:
    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self._publishing = asyncio.Event()
        self._publishing.set()

    async def start(self) -> None:
        """Nothing to connect to; the bus lives as long as the process."""

    async def close(self) -> None:
        """Shared by every service of the process: each takes its own subscriptions away."""

    def is_ready(self) -> bool:
        return True

    def hold(self) -> None:
        """Make publish() wait (until release()) while the services subscribe."""
        self._publishing.clear()

    def release(self) -> None:
        self._publishing.set()

    async def subscribe(self, subscription: Subscription) -> None:
        queue = self.queues.setdefault(subscription.queue, _Queue(subscription.queue))
        queue.subscriptions.append(subscription)
        if queue.worker is None or queue.worker.done():
            queue.worker = asyncio.create_task(self._work(queue), name=f"queue {queue.name}")
        queue.wake.set()

    async def unsubscribe(self, subscription: Subscription) -> None:
        queue = self.queues.get(subscription.queue)
        if queue is None or subscription not in queue.subscriptions:
            return
        queue.subscriptions.remove(subscription)
        if not queue.subscriptions and queue.worker is not None:
            queue.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queue.worker
            queue.worker = None

    async def publish(self, envelope: EventEnvelope, headers: dict[str, str]) -> None:
        await self.publish_many([(envelope, headers)])

    async def publish_stored(self, events: list[StoredEvent]) -> list[BaseException | None]:
        """Outbox rows: read back into envelopes (a queue takes envelopes), then as publish_many."""
        return await self.publish_many(
            [(EventEnvelope.model_validate_json(event.body), event.headers) for event in events]
        )

    async def publish_many(
        self, events: list[tuple[EventEnvelope, dict[str, str]]]
    ) -> list[BaseException | None]:
        """Each queue gets its events in one statement. The outcome of each event: None, or
        the error of a queue that could not take it (the relay publishes it again; a queue
        that has it already keeps one)."""
        await self._publishing.wait()
        outcomes: list[BaseException | None] = [None] * len(events)
        for queue in list(self.queues.values()):
            subscription = queue.active
            if subscription is None:
                continue
            wanted = [
                (index, envelope, headers)
                for index, (envelope, headers) in enumerate(events)
                if any(topic_matches(key, envelope.type) for key in subscription.routing_keys)
            ]
            if not wanted:
                continue
            if subscription.database is None:
                for _, envelope, _ in wanted:
                    try:
                        queue.memory.put_nowait(envelope)
                    except asyncio.QueueFull:
                        logger.error("queue %s is full; event %s dropped", queue.name, envelope.id)
                continue
            try:
                async with subscription.database.sessionmaker.begin() as session:
                    await session.execute(
                        insert(event_queue)
                        .values(
                            [
                                {
                                    "queue": queue.name,
                                    "event_id": envelope.id,
                                    "envelope": envelope.model_dump(mode="json"),
                                    "headers": headers,
                                }
                                for _, envelope, headers in wanted
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=["queue", "event_id"])
                    )
            except Exception as exc:
                for index, _, _ in wanted:
                    outcomes[index] = exc
                continue
            queue.wake.set()
        return outcomes

    async def _work(self, queue: _Queue) -> None:
        while True:
            subscription = queue.active
            if subscription is None:
                return
            try:
                if subscription.database is None:
                    await self._handle_from_memory(queue, subscription)
                    continue
                handled = await self._handle_batch(queue.name, subscription)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The queue's database is away: try again later, the rows are still there.
                logger.warning("queue %s: could not take events", queue.name, exc_info=True)
                handled = 0
            if handled < BATCH_SIZE:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await queue.wake.wait()
                queue.wake.clear()

    @staticmethod
    async def _handle_from_memory(queue: _Queue, subscription: Subscription) -> None:
        envelope = await queue.memory.get()
        try:
            await subscription.handler(envelope)
            subscription.record("handled")
        except Exception:
            logger.error("handler of %s failed; event %s dropped", queue.name, envelope.id)
            subscription.record("dropped")

    @staticmethod
    async def _handle_batch(name: str, subscription: Subscription) -> int:
        """Handle the queue's due events, oldest first; the rows stay locked meanwhile, so a
        second worker on the same table (another process) takes others."""
        assert subscription.database is not None
        async with subscription.database.sessionmaker.begin() as session:
            rows = (
                await session.execute(
                    select(event_queue.c.position, event_queue.c.envelope, event_queue.c.attempts)
                    .where(
                        event_queue.c.queue == name,
                        event_queue.c.dead_at.is_(None),
                        event_queue.c.available_at <= func.now(),
                    )
                    .order_by(event_queue.c.position)
                    .limit(BATCH_SIZE)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            envelopes = [EventEnvelope.model_validate(row.envelope) for row in rows]
            # A single event goes to the handler alone, once.
            batch = subscription.batch_handler is not None and len(envelopes) > 1
            if batch and await subscription.handled_as_batch(envelopes):
                done = [row.position for row in rows]
            else:
                done = [
                    row.position
                    for row, envelope in zip(rows, envelopes, strict=True)
                    if await _handle_row(session, name, subscription, row, envelope)
                ]
            if done:
                await session.execute(delete(event_queue).where(event_queue.c.position.in_(done)))
        return len(rows)


async def _handle_row(
    session: AsyncSession, name: str, subscription: Subscription, row: Row, envelope: EventEnvelope
) -> bool:
    """One event through the subscription's handler: True when handled, else its row is set
    for a retry or as a dead letter."""
    try:
        await subscription.handler(envelope)
    except Exception as exc:
        attempt = row.attempts + 1
        logger.warning("handler of %s failed (attempt %d)", name, attempt, exc_info=True)
        if attempt >= subscription.max_attempts:
            logger.error("event %s dead-lettered in %s", envelope.id, name)
            later = {"dead_at": datetime.now(UTC)}
            subscription.record("dead_lettered")
        else:
            delay = timedelta(milliseconds=subscription.delay_ms(attempt))
            later = {"available_at": datetime.now(UTC) + delay}
            subscription.record("retried")
        await session.execute(
            update(event_queue)
            .where(event_queue.c.position == row.position)
            .values(attempts=attempt, error=repr(exc)[:500], **later)
        )
        return False
    subscription.record("handled")
    return True


shared_bus = InProcessBus()
