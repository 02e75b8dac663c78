"""Idempotent event consumption: inbox de-duplication in the handlers' own transaction, a batch
of events at a time."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import String, Uuid, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from taskhub_common.bus import EventBus, Subscription
from taskhub_common.db import Database, run_after_commit
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import inbox

logger = logging.getLogger(__name__)


# The ids as one array: one statement compiled and prepared once, whatever the batch's size (a
# multi-row VALUES is compiled again for every batch).
_CLAIM = (
    insert(inbox)
    .from_select(
        ["consumer", "event_id"],
        select(
            bindparam("consumer", type_=String),
            func.unnest(bindparam("event_ids", type_=ARRAY(Uuid))),
        ),
    )
    .on_conflict_do_nothing()
    .returning(inbox.c.event_id)
)


@dataclass
class EventContext:
    """What an event handler gets: the event, the transaction to write in (the inbox row that
    marks the event handled is in the same one) and the app's state (settings, and whatever the
    service's start-up hooks made: a mailer, a client)."""

    event: EventEnvelope
    state: State
    _session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("this service subscribes without a database")
        return self._session


EventHandler = Callable[[EventContext], Awaitable[None]]
# Takes consecutive events of the types it is registered for, all at once (one upsert of many
# rows instead of one per event); their contexts share the batch's session.
BatchEventHandler = Callable[[list[EventContext]], Awaitable[None]]


class EventConsumer:
    """Consumes the events a service subscribes to.

    With a database: on the durable queue `<service>.events`, a batch of deliveries at a time
    (what the bus has at hand, up to its batch size). The batch runs in one transaction with the
    inbox rows that mark its events processed, claimed in one statement; each event goes to its
    handler in delivery order, or, for types with a batch handler, each run of consecutive such
    events to it at once. The broker messages are acknowledged only after that commit. A
    duplicate delivery finds the inbox row and is skipped. When a batch fails the bus hands its
    events over again one at a time (`process`), so a bad event is retried and dead-lettered
    alone (decision 0063).

    Without one (the gateway): on a queue of this process alone that lives as long as it does,
    for events that matter only to what the process holds now (live sockets); a batch at a time
    too (whatever the bus has at hand), with no transaction and no inbox.
    """

    def __init__(
        self,
        service: str,
        database: Database | None,
        handlers: dict[str, EventHandler],
        state: State | None = None,
        batch_handlers: dict[str, BatchEventHandler] | None = None,
    ) -> None:
        self.database = database
        self.exclusive = database is None
        self.queue = f"{service}.{uuid.uuid4().hex[:12]}" if self.exclusive else f"{service}.events"
        self.handlers = handlers
        self.batch_handlers = batch_handlers or {}
        self.state = state or State()

    def handles(self, event_type: str) -> bool:
        return event_type in self.handlers or event_type in self.batch_handlers

    async def process(self, envelope: EventEnvelope) -> None:
        await self.process_batch([envelope])

    async def process_batch(self, envelopes: list[EventEnvelope]) -> None:
        wanted = [envelope for envelope in envelopes if self.handles(envelope.type)]
        if not wanted:
            return
        if self.database is None:
            await self._dispatch([EventContext(envelope, self.state) for envelope in wanted])
            return
        async with self.database.sessionmaker() as session:
            async with session.begin():
                fresh = await self._claim(session, wanted)
                await self._dispatch([EventContext(event, self.state, session) for event in fresh])
            await run_after_commit(session)

    async def _claim(
        self, session: AsyncSession, envelopes: list[EventEnvelope]
    ) -> list[EventEnvelope]:
        """The events not handled before, in order, each once: one inbox insert for all."""
        claimed = set(
            await session.scalars(
                _CLAIM, {"consumer": self.queue, "event_ids": [event.id for event in envelopes]}
            )
        )
        fresh = []
        for envelope in envelopes:
            if envelope.id in claimed:
                claimed.discard(envelope.id)
                fresh.append(envelope)
            else:
                logger.info("duplicate event %s dropped", envelope.id)
        return fresh

    async def _dispatch(self, contexts: list[EventContext]) -> None:
        """Delivery order is kept: a batch handler takes a run of consecutive events."""
        start = 0
        while start < len(contexts):
            batch_handler = self.batch_handlers.get(contexts[start].event.type)
            if batch_handler is None:
                await self.handlers[contexts[start].event.type](contexts[start])
                start += 1
                continue
            end = start + 1
            while (
                end < len(contexts)
                and self.batch_handlers.get(contexts[end].event.type) is batch_handler
            ):
                end += 1
            await batch_handler(contexts[start:end])
            start = end

    async def subscribe(
        self,
        bus: EventBus,
        max_attempts: int,
        retry_delays_ms: list[int],
        on_outcome: Callable[[str], None] | None = None,
    ) -> Subscription:
        subscription = Subscription(
            queue=self.queue,
            routing_keys=sorted({*self.handlers, *self.batch_handlers}),
            handler=self.process,
            batch_handler=self.process_batch,
            max_attempts=max_attempts,
            retry_delays_ms=retry_delays_ms,
            exclusive=self.exclusive,
            database=self.database,
            on_outcome=on_outcome,
        )
        await bus.subscribe(subscription)
        return subscription
