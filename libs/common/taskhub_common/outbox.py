"""Transactional outbox, inbox and event-queue tables, and the relay that publishes the outbox.

Every service has the same tables in its own schema; the search_path of its connections picks
the schema, so these Core tables serve all services.
"""

import asyncio
import contextlib
import json
import logging
import math
import time
from datetime import timedelta

from pydantic import TypeAdapter
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.bus import EventBus, StoredEvent
from taskhub_common.db import Database, array_rows
from taskhub_common.events import EventEnvelope
from taskhub_common.idempotency import prune_idempotency_keys
from taskhub_common.logs import trace_headers
from taskhub_common.tracing import publishing

logger = logging.getLogger(__name__)

# Sent outbox rows go within about a minute (kept that long so a look at the table shows what
# went out); the inbox is pruned hourly, its rows being kept for weeks anyway.
PRUNE_SENT_EVERY_SECONDS = 60
PRUNE_INBOX_EVERY_SECONDS = 3600

metadata = MetaData()

outbox = Table(
    "outbox",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("position", BigInteger, Identity(), nullable=False, unique=True),
    Column("routing_key", String(100), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    Index("ix_outbox_unsent", "position", postgresql_where=text("sent_at IS NULL")),
)

# The embedded mode's queues (taskhub_common.local_bus): events waiting for this service's
# handlers, and its dead letters. Unused (empty) on RabbitMQ.
event_queue = Table(
    "event_queue",
    metadata,
    Column("position", BigInteger, Identity(), primary_key=True),
    Column("queue", String(100), nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("dead_at", DateTime(timezone=True)),
    Column("error", Text),
    UniqueConstraint("queue", "event_id"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", Uuid, primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def add_event(session: AsyncSession, envelope: EventEnvelope) -> None:
    """Record an event in the same transaction as the change it describes."""
    await add_events(session, [envelope])


# The events arrive as three arrays (ids, types, each envelope's JSON) and PostgreSQL makes one
# row of each position, in the arrays' order: one statement and three parameters however many
# events (a bulk create writes a thousand). Arrays rather than one JSON array of the envelopes:
# PostgreSQL then parses each envelope once, not the whole batch into one value that is split
# again (decision 0087: about a third less time for a thousand).
_events = array_rows(
    "events", {"id": Uuid, "type": Text, "payload": Text}, with_ordinality="position"
)
_INSERT_ALL = insert(outbox).from_select(
    ["id", "routing_key", "payload", "headers"],
    select(
        _events.c.id,
        _events.c.type,
        cast(_events.c.payload, JSONB),
        cast(bindparam("headers_json", type_=Text), JSONB),
    ).order_by(_events.c.position),
)
_ENVELOPE = TypeAdapter(EventEnvelope)


async def add_events(session: AsyncSession, envelopes: list[EventEnvelope]) -> None:
    """Several events in one statement."""
    await session.execute(
        _INSERT_ALL,
        {
            "events_id": [envelope.id for envelope in envelopes],
            "events_type": [envelope.type for envelope in envelopes],
            "events_payload": [_ENVELOPE.dump_json(envelope).decode() for envelope in envelopes],
            "headers_json": json.dumps(trace_headers()),
        },
    )
    mark_outbox_written(session)


def mark_outbox_written(session: AsyncSession) -> None:
    """Wake the relay after this transaction commits (for rows written by raw SQL too)."""
    session.info["outbox_pending"] = True


class OutboxRelay:
    """Publishes unsent outbox rows, oldest first, then marks them sent.

    Oldest first is not a global order: with several relays, retries and concurrent consumers,
    events of one aggregate may arrive out of order, and consumers must not rely on it.

    Rows are claimed with FOR UPDATE SKIP LOCKED so several replicas can relay at once. A batch
    is published at once and its confirms awaited together (one confirm round trip per batch,
    not per row). A row is marked sent only after the broker confirmed it, so a crash in between
    republishes it (consumers drop the duplicate through their inbox). Sent rows are deleted
    a minute later: the outbox holds what is pending, not a history.
    """

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
        keep_sent: timedelta = timedelta(minutes=1),
        # Longer: a dead letter replayed weeks later must still find its event handled.
        keep_processed: timedelta = timedelta(days=30),
    ) -> None:
        self.database = database
        self.bus = bus
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size
        self.keep_sent = keep_sent
        self.keep_processed = keep_processed
        # Both are due at the first pass: a process restarted often still prunes.
        self._sent_pruned_at = self._inbox_pruned_at = -math.inf

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                published = await self.publish_batch()
                await self._prune_when_due()
                failures = 0
            except Exception:
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                logger.warning("outbox relay failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            if published < self.batch_size:
                await self._wait_for_new_rows()

    async def _wait_for_new_rows(self) -> None:
        signal = self.database.outbox_written
        try:
            async with asyncio.timeout(self.poll_seconds):
                await signal.wait()
        except TimeoutError:
            pass
        signal.clear()

    async def publish_batch(self) -> int:
        async with self.database.sessionmaker() as session, session.begin():
            # The payload as PostgreSQL's text of it: published as it is, not parsed, validated
            # and serialised again (that cost more than the rest of the relay together).
            rows = (
                await session.execute(
                    select(
                        outbox.c.id,
                        outbox.c.routing_key,
                        cast(outbox.c.payload, Text).label("body"),
                        outbox.c.headers,
                    )
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.position)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            with contextlib.ExitStack() as spans:
                # With tracing on, each under a producer span of its row's trace until its
                # confirm; the headers then carry that span.
                events = [
                    StoredEvent(
                        row.id,
                        row.routing_key,
                        row.body.encode(),
                        spans.enter_context(publishing(row.routing_key, row.headers)),
                    )
                    for row in rows
                ]
                outcomes = await self.bus.publish_stored(events)
            sent = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
            failure = next((outcome for outcome in outcomes if outcome is not None), None)
            # What the broker confirmed is marked sent even when another publish failed.
            if sent:
                await session.execute(
                    update(outbox).where(outbox.c.id.in_(sent)).values(sent_at=func.now())
                )
        if failure is not None:
            raise failure
        return len(rows)

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if now - self._sent_pruned_at > PRUNE_SENT_EVERY_SECONDS:
            await self.prune_sent()
            self._sent_pruned_at = now
        if now - self._inbox_pruned_at > PRUNE_INBOX_EVERY_SECONDS:
            await self.prune_processed()
            self._inbox_pruned_at = now

    async def prune(self) -> None:
        """Drop rows published or processed before their keep: outbox and inbox are not
        archives."""
        await self.prune_sent()
        await self.prune_processed()

    async def prune_sent(self) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            await session.execute(
                delete(outbox).where(outbox.c.sent_at < func.now() - self.keep_sent)
            )

    async def prune_processed(self) -> None:
        async with self.database.sessionmaker() as session, session.begin():
            await session.execute(
                delete(inbox).where(inbox.c.processed_at < func.now() - self.keep_processed)
            )
            # Idempotency keys past their 24 hours: pruned as seldom as the inbox.
            await prune_idempotency_keys(session)
