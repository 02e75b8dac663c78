"""Events the comments service consumes, besides user.* for its author directory."""

from sqlalchemy.ext.asyncio import AsyncSession

from comments.repository import CommentRepository
from taskhub_common.events import EventEnvelope

TASK_DELETED = "task.deleted"


async def on_task_deleted(session: AsyncSession, event: EventEnvelope) -> None:
    """Remember the task as deleted: its comments stop being served, and nothing is destroyed."""
    task_id = event.aggregate_id
    if task_id is None:
        raise ValueError(f"task.deleted event {event.id} names no task")
    await CommentRepository(session).mark_task_deleted(task_id)
