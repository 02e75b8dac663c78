"""Tasks that the tasks service said are deleted, kept by each service that hangs things on
tasks (comments, files, the notifier): what belongs to a deleted task is no longer served, and
nothing is destroyed (the delete is soft). Fed by `task.deleted`.
"""

import uuid

from alembic import op
from sqlalchemy import Column, DateTime, MetaData, Table, Uuid, exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.consumer import EventContext

metadata = MetaData()

deleted_tasks = Table(
    "deleted_tasks",
    metadata,
    Column("task_id", Uuid, primary_key=True),
    # When the task was deleted (the event's occurred_at).
    Column("deleted_at", DateTime(timezone=True), nullable=False),
)


async def is_task_deleted(session: AsyncSession, task_id: uuid.UUID) -> bool:
    return bool(await session.scalar(select(exists().where(deleted_tasks.c.task_id == task_id))))


async def on_task_deleted(ctx: EventContext) -> None:
    """Handler of task.deleted: remember the task as deleted (a duplicate changes nothing)."""
    task_id = ctx.event.aggregate_id
    if task_id is None:
        raise ValueError(f"task.deleted event {ctx.event.id} names no task")
    await ctx.session.execute(
        insert(deleted_tasks)
        .values(task_id=task_id, deleted_at=ctx.event.occurred_at)
        .on_conflict_do_nothing(index_elements=[deleted_tasks.c.task_id])
    )


def create_deleted_tasks() -> None:
    """The table, created by the migration of each service keeping one."""
    metadata.create_all(op.get_bind())
