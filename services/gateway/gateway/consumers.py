"""The events the gateway fans out to WebSocket clients. It has no database: it receives them
on a queue of its own process (see EventConsumer), so every replica sees every event."""

from gateway.live import MESSAGES, LiveUpdates
from taskhub_common.consumer import EventContext, EventHandler


async def deliver(ctx: EventContext) -> None:
    live: LiveUpdates = ctx.state.live
    await live.hub.deliver(ctx.event)


EVENT_HANDLERS: dict[str, EventHandler] = dict.fromkeys(MESSAGES, deliver)
