"""Events the analytics service consumes: task.* (the read model) and user.* (the names the
performance answer and the export show)."""

from analytics.repository import AnalyticsRepository
from taskhub_common.consumer import EventContext
from taskhub_common.contracts import TASK_DELETED, TASK_EVENTS, TaskData
from taskhub_common.db import after_commit
from taskhub_common.users import USER_EVENT_HANDLERS


async def on_task_event(ctx: EventContext) -> None:
    """Every task event carries the whole task after the change: the model takes it when it is
    newer than what it holds (see AnalyticsRepository.apply), and the cached answers go."""
    task = TaskData.model_validate(ctx.event.data)
    await AnalyticsRepository(ctx.session).apply([task], deleted=ctx.event.type == TASK_DELETED)
    after_commit(ctx.session, ctx.state.cache.invalidate)


EVENT_HANDLERS = {
    **USER_EVENT_HANDLERS,
    **dict.fromkeys(TASK_EVENTS, on_task_event),
}
