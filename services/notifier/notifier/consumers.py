"""The events the notifier consumes. Whom to tell is decided when the event is handled, from
the notifier's own read model of tasks: a task deleted or completed meanwhile, or a user no
longer its assignee, gets no notice."""

import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from notifier import notices
from notifier.delivery import Dispatcher, Notice
from notifier.repository import (
    ReminderRepository,
    TaskSnapshot,
    TaskStateRepository,
    UserEmailRepository,
)
from taskhub_common import deleted_tasks, users
from taskhub_common.consumer import EventContext
from taskhub_common.contracts import (
    COMMENT_CREATED,
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_OVERDUE,
    TASK_UPDATED,
    USER_REGISTERED,
    USER_UPDATED,
    CommentData,
    TaskData,
    UserData,
)

COMPLETED = "completed"


async def on_user_event(ctx: EventContext) -> None:
    """The shared user directory (who may call), and the address mail goes to."""
    await users.on_user_event(ctx)
    user = UserData.model_validate(ctx.event.data)
    await UserEmailRepository(ctx.session).upsert(user.id, user.email, ctx.event.occurred_at)


async def on_task_events(contexts: list[EventContext]) -> None:
    """task.created, task.updated, task.completed and task.assigned, a run of them at once: the
    read model (and reminders follow); the assignee of a task assigned, or created with an
    assignee, is told. A task named again in the run starts a new round, so each event sees
    the state the ones before it left."""
    for chunk in _each_task_once(contexts):
        session = chunk[0][0].session
        states = await _apply_many(session, [task for _, task in chunk])
        deliveries = [
            told
            for ctx, task in chunk
            if ctx.event.type in (TASK_CREATED, TASK_ASSIGNED)
            and (told := _assignee_notice(ctx, task, states[task.id])) is not None
        ]
        if deliveries:
            await _dispatcher(chunk[0][0]).deliver_many(session, deliveries)


def _each_task_once(contexts: list[EventContext]) -> list[list[tuple[EventContext, TaskData]]]:
    """The run in order, cut before each event of a task already in the current piece."""
    chunks: list[list[tuple[EventContext, TaskData]]] = [[]]
    seen: set[uuid.UUID] = set()
    for ctx in contexts:
        task = TaskData.model_validate(ctx.event.data)
        if task.id in seen:
            chunks.append([])
            seen.clear()
        seen.add(task.id)
        chunks[-1].append((ctx, task))
    return chunks


async def on_task_deleted(ctx: EventContext) -> None:
    await _apply(ctx)
    await deleted_tasks.on_task_deleted(ctx)


async def on_task_overdue(ctx: EventContext) -> None:
    """The assignee, or the creator of an unassigned task; only for tasks with notify_overdue
    that are still overdue now."""
    _, state = await _apply(ctx)
    due_date = state.due_date
    if _closed(state) or not state.notify_overdue:
        return
    if due_date is None or due_date > datetime.now(UTC):
        return
    recipient = state.assigned_to or state.created_by
    if recipient == ctx.event.actor_id:
        return
    notice = notices.task_overdue(ctx.event.id, state.task_id, state.title, due_date)
    await _dispatcher(ctx).deliver(ctx.session, notice, [recipient])


async def on_comment_created(ctx: EventContext) -> None:
    """The task's creator and assignee, as the notifier knows them now (else as the event says),
    except the comment's author."""
    comment = CommentData.model_validate(ctx.event.data)
    if await deleted_tasks.is_task_deleted(ctx.session, comment.task_id):
        return
    state = await TaskStateRepository(ctx.session).get(comment.task_id)
    if state is not None:
        if state.is_deleted:
            return
        people = {state.created_by, state.assigned_to}
    else:
        people = {comment.task_creator_id, comment.task_assignee_id}
    recipients = {
        person
        for person in people
        if person is not None and person not in (comment.user_id, ctx.event.actor_id)
    }
    author = comment.author.full_name or comment.author.username if comment.author else None
    notice = notices.comment_added(
        ctx.event.id, comment.task_id, state.title if state else None, author
    )
    await _dispatcher(ctx).deliver(ctx.session, notice, recipients)


async def _apply(ctx: EventContext) -> tuple[TaskData, TaskSnapshot]:
    task = TaskData.model_validate(ctx.event.data)
    return task, (await _apply_many(ctx.session, [task]))[task.id]


async def _apply_many(
    session: AsyncSession, tasks: list[TaskData]
) -> dict[uuid.UUID, TaskSnapshot]:
    """Fold the events' tasks (each named once) into the read model (an older one changes
    nothing) and keep the tasks' pending reminders in step: dropped once a task is closed,
    moved with its due date."""
    states = await TaskStateRepository(session).apply_many(
        [
            {
                "task_id": task.id,
                "title": task.title,
                "status": task.status,
                "due_date": task.due_date,
                "notify_overdue": task.notify_overdue,
                "is_deleted": task.is_deleted,
                "created_by": task.created_by,
                "assigned_to": task.assigned_to,
                "updated_at": task.updated_at,
            }
            for task in tasks
        ]
    )
    reminders = ReminderRepository(session)
    await reminders.drop_pending_of_tasks([task.id for task in tasks if _closed(states[task.id])])
    # Only an event that may set the due date (a create, a sweep, a change of it) moves the
    # reminders: an assignment or a new title leaves them be.
    await reminders.follow_due_dates(
        {
            task.id: states[task.id].due_date
            for task in tasks
            if not _closed(states[task.id]) and (task.changes is None or "due_date" in task.changes)
        }
    )
    return states


def _assignee_notice(
    ctx: EventContext, task: TaskData, state: TaskSnapshot
) -> tuple[Notice, list[uuid.UUID]] | None:
    assignee = task.assigned_to
    if assignee is None or assignee != state.assigned_to or assignee == ctx.event.actor_id:
        return None
    if _closed(state):
        return None
    return notices.task_assigned(ctx.event.id, state.task_id, state.title), [assignee]


def _closed(state: TaskSnapshot) -> bool:
    """Deleted or completed: nobody is told about it any more. The read model says so for
    task events: task.deleted is folded into it like any other, and an older event never
    undoes it (deleted_tasks serves the events that carry no task: comments)."""
    return state.is_deleted or state.status == COMPLETED


def _dispatcher(ctx: EventContext) -> Dispatcher:
    return ctx.state.dispatcher


EVENT_HANDLERS = {
    USER_REGISTERED: on_user_event,
    USER_UPDATED: on_user_event,
    TASK_DELETED: on_task_deleted,
    TASK_OVERDUE: on_task_overdue,
    COMMENT_CREATED: on_comment_created,
}
BATCH_EVENT_HANDLERS = dict.fromkeys(
    (TASK_CREATED, TASK_UPDATED, TASK_COMPLETED, TASK_ASSIGNED), on_task_events
)
