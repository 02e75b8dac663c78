"""Idempotent event consumption: inbox de-duplication in the handler's own transaction."""

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from taskhub_common.bus import EventBus, Subscription
from taskhub_common.db import Database, run_after_commit
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import inbox

logger = logging.getLogger(__name__)


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


class EventConsumer:
    """Consumes the events a service subscribes to.

    With a database: on the durable queue `<service>.events`; each event runs its handler in one
    transaction together with the inbox row that marks it processed, and the broker message is
    acknowledged only after that commit. A duplicate delivery finds the inbox row and does
    nothing.

    Without one (the gateway): on a queue of this process alone that lives as long as it does,
    for events that matter only to what the process holds now (live sockets).
    """

    def __init__(
        self,
        service: str,
        database: Database | None,
        handlers: dict[str, EventHandler],
        state: State | None = None,
    ) -> None:
        self.database = database
        self.exclusive = database is None
        self.queue = f"{service}.{uuid.uuid4().hex[:12]}" if self.exclusive else f"{service}.events"
        self.handlers = handlers
        self.state = state or State()

    async def process(self, envelope: EventEnvelope) -> None:
        handler = self.handlers.get(envelope.type)
        if handler is None:
            return
        if self.database is None:
            await handler(EventContext(envelope, self.state))
            return
        async with self.database.sessionmaker() as session:
            async with session.begin():
                claimed = await session.execute(
                    insert(inbox)
                    .values(consumer=self.queue, event_id=envelope.id)
                    .on_conflict_do_nothing()
                )
                if claimed.rowcount == 0:
                    logger.info("duplicate event %s dropped", envelope.id)
                    return
                await handler(EventContext(envelope, self.state, session))
            await run_after_commit(session)

    async def subscribe(
        self,
        bus: EventBus,
        max_attempts: int,
        retry_delays_ms: list[int],
        on_outcome: Callable[[str], None] | None = None,
    ) -> Subscription:
        subscription = Subscription(
            queue=self.queue,
            routing_keys=sorted(self.handlers),
            handler=self.process,
            max_attempts=max_attempts,
            retry_delays_ms=retry_delays_ms,
            exclusive=self.exclusive,
            database=self.database,
            on_outcome=on_outcome,
        )
        await bus.subscribe(subscription)
        return subscription
