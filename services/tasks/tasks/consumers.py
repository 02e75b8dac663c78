"""Events the tasks service consumes: user.* for its user directory."""

from taskhub_common.consumer import EventContext
from taskhub_common.contracts import USER_REGISTERED, USER_UPDATED
from taskhub_common.db import after_commit
from taskhub_common.users import on_user_event


async def on_user_changed(ctx: EventContext) -> None:
    """A user's new name shows in cached tasks at once: the cache is dropped after the commit."""
    await on_user_event(ctx)
    after_commit(ctx.session, ctx.state.cache.invalidate)


EVENT_HANDLERS = {USER_REGISTERED: on_user_changed, USER_UPDATED: on_user_changed}
