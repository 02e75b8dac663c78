"""Every query of the comments service."""

import uuid
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from comments.models import Comment
from taskhub_common.users import users

comments = Comment.__table__
author = users.alias("author")
AUTHOR_FIELDS = ("id", "username", "full_name", "avatar_url", "is_active", "created_at")
ORDER = (comments.c.created_at, comments.c.id)


def _view_select() -> Select:
    """A comment row with its author's directory entry (one statement for a whole page)."""
    return select(
        *comments.c, *(author.c[name].label(f"author_{name}") for name in AUTHOR_FIELDS)
    ).select_from(comments.outerjoin(author, author.c.id == comments.c.user_id))


def _view(row: Row) -> dict[str, Any]:
    values = row._mapping
    view = {column.name: values[column.name] for column in comments.c}
    person = {name: values[f"author_{name}"] for name in AUTHOR_FIELDS}
    view["author"] = person if person["id"] is not None else None
    return view


class CommentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(
        self, task_id: uuid.UUID, comment_id: uuid.UUID, for_update: bool = False
    ) -> Comment | None:
        """A live comment of this task (one of another task is not found here)."""
        statement = (
            select(Comment)
            .where(
                Comment.id == comment_id,
                Comment.task_id == task_id,
                Comment.is_deleted.is_(False),
            )
            .execution_options(populate_existing=True)
        )
        if for_update:
            statement = statement.with_for_update()
        return await self.session.scalar(statement)

    async def add(self, values: dict[str, Any]) -> uuid.UUID:
        return await self.session.scalar(insert(Comment).values(**values).returning(Comment.id))

    async def change(self, comment_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Set `values` and touch updated_at (the database's clock, as for created_at)."""
        await self.session.execute(
            update(Comment)
            .where(Comment.id == comment_id)
            .values(**values, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )

    async def view(self, comment_id: uuid.UUID) -> dict[str, Any]:
        row = (await self.session.execute(_view_select().where(comments.c.id == comment_id))).one()
        return _view(row)

    async def count(self, task_id: uuid.UUID) -> int:
        statement = select(func.count()).where(
            comments.c.task_id == task_id, comments.c.is_deleted.is_(False)
        )
        return await self.session.scalar(statement) or 0

    async def page(self, task_id: uuid.UUID, offset: int, limit: int) -> list[dict[str, Any]]:
        """Live comments of a task, oldest first (ix_comments_task_id_created_at_id)."""
        statement = (
            _view_select()
            .where(comments.c.task_id == task_id, comments.c.is_deleted.is_(False))
            .order_by(*ORDER)
            .offset(offset)
            .limit(limit)
        )
        return [_view(row) for row in await self.session.execute(statement)]
