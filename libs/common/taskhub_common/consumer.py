"""Idempotent event consumption: inbox de-duplication in the handler's own transaction."""

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.bus import EventBus, Subscription
from taskhub_common.db import Database, run_after_commit
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import inbox

logger = logging.getLogger(__name__)

EventHandler = Callable[[AsyncSession, EventEnvelope], Awaitable[None]]


class EventConsumer:
    """Consumes the events a service subscribes to, on its durable queue `<service>.events`.

    Each event runs its handler in one transaction together with the inbox row that marks it
    processed; the broker message is acknowledged only after that commit. A duplicate delivery
    finds the inbox row and does nothing.
    """

    def __init__(self, service: str, database: Database, handlers: dict[str, EventHandler]) -> None:
        self.queue = f"{service}.events"
        self.database = database
        self.handlers = handlers

    async def process(self, envelope: EventEnvelope) -> None:
        handler = self.handlers.get(envelope.type)
        if handler is None:
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
                await handler(session, envelope)
            await run_after_commit(session)

    async def subscribe(self, bus: EventBus, max_attempts: int, retry_delays_ms: list[int]) -> None:
        await bus.subscribe(
            Subscription(
                queue=self.queue,
                routing_keys=sorted(self.handlers),
                handler=self.process,
                max_attempts=max_attempts,
                retry_delays_ms=retry_delays_ms,
            )
        )
