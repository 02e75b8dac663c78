"""Events the analytics service consumes: task.* (the read model) and user.* (the names the
performance answer and the export show)."""

from analytics.repository import AnalyticsRepository
from taskhub_common.consumer import EventContext
from taskhub_common.contracts import TASK_DELETED, TASK_EVENTS, TaskData
from taskhub_common.db import after_commit
from taskhub_common.users import USER_EVENT_HANDLERS


async def on_task_events(contexts: list[EventContext]) -> None:
    """Every task event carries the whole task after the change: the model takes it when it is
    newer than what it holds (see AnalyticsRepository.apply), a batch of them in one statement,
    and the cached answers go once the batch is committed."""
    tasks = []
    for ctx in contexts:
        task = TaskData.model_validate(ctx.event.data)
        if ctx.event.type == TASK_DELETED:
            task = task.model_copy(update={"is_deleted": True})
        tasks.append(task)
    session = contexts[0].session
    await AnalyticsRepository(session).apply(tasks)
    after_commit(session, contexts[0].state.cache.invalidate)


EVENT_HANDLERS = USER_EVENT_HANDLERS
BATCH_EVENT_HANDLERS = dict.fromkeys(TASK_EVENTS, on_task_events)
