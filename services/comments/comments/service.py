"""The comments use cases. No HTTP here; the request's transaction is committed by the route."""

import uuid
from typing import Any

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from comments.models import Comment
from comments.rendering import render_markdown
from comments.repository import CommentRepository
from comments.schemas import CommentCreate, CommentOut, CommentQuery, CommentUpdate
from taskhub_common.cache import GenerationalCache
from taskhub_common.contracts import (
    COMMENT_CREATED,
    COMMENT_DELETED,
    COMMENT_UPDATED,
    CommentData,
)
from taskhub_common.db import after_commit
from taskhub_common.deleted_tasks import is_task_deleted
from taskhub_common.errors import NotFound, NotPermitted
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import add_event
from taskhub_common.tasks_client import TaskReference, TasksClient


async def render(content: str) -> str:
    """Rendered in a worker thread: the longest comments take markdown-it-py up to a fifth of a
    second (decision 0052), which the event loop need not wait for."""
    return await to_thread.run_sync(render_markdown, content)


class CommentService:
    def __init__(
        self,
        session: AsyncSession,
        tasks: TasksClient,
        task_parts: GenerationalCache,
        producer: str,
        caller_id: uuid.UUID,
    ) -> None:
        self.session = session
        self.tasks = tasks
        self.task_parts = task_parts
        self.producer = producer
        self.caller_id = caller_id
        self.comments = CommentRepository(session)

    # Reads: every active user reads the comments of every live task.

    async def list(
        self, task_id: uuid.UUID, query: CommentQuery, task_seen: bool = False
    ) -> tuple[list[CommentOut], int]:
        """One page, oldest first, and the number of the task's comments. With `task_seen`
        (the gateway had the task live from tasks a moment ago), tasks is not asked again."""
        if task_seen:
            await self._refuse_deleted(task_id)
        else:
            await self._task(task_id)
        total = await self.comments.count(task_id)
        offset = (query.page - 1) * query.page_size
        if offset >= total:  # past the end (and no OFFSET too large for the database)
            return [], total
        views = await self.comments.page(task_id, offset, query.page_size)
        return [CommentOut.model_validate(view) for view in views], total

    # Writes: anyone may comment; only the author changes or deletes a comment.

    async def create(self, task_id: uuid.UUID, body: CommentCreate) -> CommentOut:
        task = await self._task(task_id)
        content_html = await render(body.content)
        comment_id = await self.comments.add(
            {
                "id": uuid.uuid4(),
                "task_id": task_id,
                "user_id": self.caller_id,
                "content": body.content,
                "content_html": content_html,
            }
        )
        presented = await self._present(comment_id)
        await self._publish(COMMENT_CREATED, presented, task, None)
        return presented

    async def update(
        self, task_id: uuid.UUID, comment_id: uuid.UUID, body: CommentUpdate
    ) -> CommentOut:
        task = await self._task(task_id)
        content_html = await render(body.content)  # before the row is locked
        comment = await self._own_comment(task_id, comment_id)
        if body.content == comment.content:
            return await self._present(comment_id)  # nothing changed: nothing written, no event
        changes = {"content": body.content, "content_html": content_html}
        await self.comments.change(comment_id, changes)
        presented = await self._present(comment_id)
        await self._publish(COMMENT_UPDATED, presented, task, changes)
        return presented

    async def delete(self, task_id: uuid.UUID, comment_id: uuid.UUID) -> None:
        """A soft delete: the row stays, flagged, and is no longer served."""
        task = await self._task(task_id)
        await self._own_comment(task_id, comment_id)
        changes = {"is_deleted": True}
        await self.comments.change(comment_id, changes)
        await self._publish(COMMENT_DELETED, await self._present(comment_id), task, changes)

    # Helpers.

    async def _task(self, task_id: uuid.UUID) -> TaskReference:
        """The live task, or NotFound. task.deleted is remembered here, so a deleted task's
        comments stop at once, without waiting for (or trusting) an answer from tasks."""
        await self._refuse_deleted(task_id)
        return await self.tasks.get(task_id)

    async def _refuse_deleted(self, task_id: uuid.UUID) -> None:
        if await is_task_deleted(self.session, task_id):
            raise NotFound("Task not found")

    async def _own_comment(self, task_id: uuid.UUID, comment_id: uuid.UUID) -> Comment:
        comment = await self.comments.get(task_id, comment_id, for_update=True)
        if comment is None:
            raise NotFound("Comment not found")
        if comment.user_id != self.caller_id:
            raise NotPermitted("Only the comment's author may change or delete it")
        return comment

    async def _present(self, comment_id: uuid.UUID) -> CommentOut:
        return CommentOut.model_validate(await self.comments.view(comment_id))

    async def _publish(
        self,
        event_type: str,
        comment: CommentOut,
        task: TaskReference,
        changes: dict[str, Any] | None,
    ) -> None:
        # The task's people ride along, so the notifier knows whom to tell without asking tasks.
        data = CommentData(
            **comment.model_dump(),
            task_creator_id=task.created_by,
            task_assignee_id=task.assigned_to,
            changes=changes,
        )
        await add_event(
            self.session,
            EventEnvelope(
                type=event_type,
                producer=self.producer,
                actor_id=self.caller_id,
                aggregate_id=comment.id,
                data=data.model_dump(exclude={"changes"} if changes is None else None),
            ),
        )
        # The gateway's copies of comment lists are stale once this commits (decision 0044).
        after_commit(self.session, self.task_parts.invalidate)
