"""The events the gateway fans out to WebSocket clients. It has no database: it receives them
on a queue of its own process (see EventConsumer), so every replica sees every event; the bus
hands over whatever it has at hand at once, and the hub numbers them in one append."""

from gateway.live import MESSAGES, LiveUpdates
from taskhub_common.consumer import BatchEventHandler, EventContext


async def deliver(contexts: list[EventContext]) -> None:
    live: LiveUpdates = contexts[0].state.live
    await live.hub.deliver(*(ctx.event for ctx in contexts))


BATCH_EVENT_HANDLERS: dict[str, BatchEventHandler] = dict.fromkeys(MESSAGES, deliver)
