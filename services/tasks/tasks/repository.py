"""Every query of the tasks service."""

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Enum,
    Select,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSON, aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.sql import Subquery

from taskhub_common.db import json_rows
from taskhub_common.errors import invalid_field
from taskhub_common.users import users
from tasks.models import Tag, Task, TaskStatus, task_tags
from tasks.schemas import DICTS, TaskQuery

# Tasks without a due date sort after every dated one (and keyset paging needs a value). A
# literal, not a parameter, so that the expression index ix_tasks_due_sort matches it.
DUE_SORT_KEY = func.coalesce(
    Task.due_date, literal_column("'9999-12-31 00:00:00+00'::timestamptz", DateTime(timezone=True))
)

TAG_COLORS = [
    "#ef4444",
    "#f97316",
    "#eab308",
    "#22c55e",
    "#14b8a6",
    "#3b82f6",
    "#8b5cf6",
    "#ec4899",
]


def tag_color(name: str) -> str:
    """A stable colour per tag name, so the same tag looks the same everywhere."""
    return TAG_COLORS[sum(name.lower().encode()) % len(TAG_COLORS)]


def _sort_key(sort_by: str) -> ColumnElement[Any]:
    if sort_by == "due_date":
        return DUE_SORT_KEY
    return getattr(Task, sort_by)


def _escape_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


creator = users.alias("creator")
assignee = users.alias("assignee")
PERSON_FIELDS = ("id", "username", "full_name", "avatar_url", "is_active", "created_at")

# The task's tags as a JSON array, sorted by name: no second query per page.
TAGS_JSON = type_coerce(
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_object(
                        "id",
                        Tag.id,
                        "name",
                        Tag.name,
                        "color",
                        Tag.color,
                        "created_at",
                        Tag.created_at,
                    ),
                    Tag.name,
                )
            ),
            text("'[]'::json"),
        )
    )
    .select_from(task_tags.join(Tag, Tag.id == task_tags.c.tag_id))
    .where(task_tags.c.task_id == Task.__table__.c.id)
    .scalar_subquery(),
    JSON,
)


# What a new task is given; the other columns take their defaults.
NEW_TASK_COLUMNS = (
    "id",
    "title",
    "description",
    "status",
    "priority",
    "start_date",
    "due_date",
    "completed_at",
    "notify_overdue",
    "created_by",
    "assigned_to",
)
_INSERT_TASKS = (
    insert(Task.__table__)
    .from_select(NEW_TASK_COLUMNS, json_rows(Task.__table__, NEW_TASK_COLUMNS))
    .returning(*Task.__table__.c)
)
_INSERT_TASK_TAGS = insert(task_tags).from_select(
    ("task_id", "tag_id"), json_rows(task_tags, ("task_id", "tag_id"))
)


def _view_select(page: Subquery | None = None) -> Select:
    """A task row with its tags and its creator's and assignee's directory entries; joined to
    `page` (ids chosen by an indexed query) when given, so the joins run for those rows only."""
    tasks = Task.__table__
    source = tasks if page is None else page.join(tasks, tasks.c.id == page.c.id)
    return select(
        *tasks.c,
        TAGS_JSON.label("tags"),
        *(creator.c[name].label(f"creator_{name}") for name in PERSON_FIELDS),
        *(assignee.c[name].label(f"assignee_{name}") for name in PERSON_FIELDS),
    ).select_from(
        source.outerjoin(creator, creator.c.id == tasks.c.created_by).outerjoin(
            assignee, assignee.c.id == tasks.c.assigned_to
        )
    )


def _view(row: Row) -> dict[str, Any]:
    values = row._mapping
    view = {column.name: values[column.name] for column in Task.__table__.c}
    view["tags"] = values["tags"]
    for role in ("creator", "assignee"):
        person = {name: values[f"{role}_{name}"] for name in PERSON_FIELDS}
        view[role] = person if person["id"] is not None else None
    return view


class TaskRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, task_id: uuid.UUID, for_update: bool = False) -> Task | None:
        statement = (
            select(Task)
            .where(Task.id == task_id, Task.is_deleted.is_(False))
            .options(selectinload(Task.tags))
            .execution_options(populate_existing=True)
        )
        if for_update:
            statement = statement.with_for_update(of=Task)
        return await self.session.scalar(statement)

    async def insert_many(self, rows: bytes) -> list[dict[str, Any]]:
        """New tasks, given as one JSON array of their columns (the others take their defaults),
        in one statement; the rows as stored come back, as dicts by column name."""
        result = await self.session.execute(_INSERT_TASKS, {"rows": rows.decode()})
        names = tuple(result.keys())
        return [dict(zip(names, row, strict=True)) for row in result]

    async def people(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, Row]:
        """Directory entries by id, as a task shows its creator and assignee."""
        statement = select(*(users.c[name] for name in PERSON_FIELDS)).where(users.c.id.in_(ids))
        return {row.id: row for row in await self.session.execute(statement)}

    async def views(self, task_ids: list[uuid.UUID], include_deleted: bool = False) -> list[dict]:
        """Tasks as shown to users, in the order of `task_ids` (one statement)."""
        statement = _view_select().where(Task.__table__.c.id.in_(task_ids))
        if not include_deleted:
            statement = statement.where(Task.__table__.c.is_deleted.is_(False))
        by_id = {row.id: _view(row) for row in await self.session.execute(statement)}
        return [by_id[task_id] for task_id in task_ids if task_id in by_id]

    async def export_page(self, after: uuid.UUID | None, limit: int) -> list[dict]:
        """Every task, deleted ones too, in id order after `after` (keyset: each page is an index
        range scan, however deep)."""
        tasks = Task.__table__
        statement = _view_select().order_by(tasks.c.id).limit(limit)
        if after is not None:
            statement = statement.where(tasks.c.id > after)
        return [_view(row) for row in await self.session.execute(statement)]

    async def count(self, query: TaskQuery) -> int:
        statement = select(func.count()).select_from(Task.__table__).where(*self._filters(query))
        return await self.session.scalar(statement) or 0

    async def find_page(self, query: TaskQuery) -> tuple[list[dict], str | None]:
        """One page of task views and the cursor of the next page (one statement: the page's ids
        come from an index-ordered subquery, and only those rows are joined and decorated)."""
        sort_key = _sort_key(query.sort_by)
        descending = query.sort_order == "desc"
        ids = select(Task.id, sort_key.label("sort_key")).where(*self._filters(query))
        if query.cursor:
            after_value, after_id = _decode_cursor(query.cursor, sort_key)
            position = tuple_(sort_key, Task.id)
            boundary = tuple_(literal(after_value, sort_key.type), literal(after_id))
            ids = ids.where(position < boundary if descending else position > boundary)
        else:
            ids = ids.offset((query.page - 1) * query.page_size)
        order = [sort_key.desc(), Task.id.desc()] if descending else [sort_key.asc(), Task.id.asc()]
        page = ids.order_by(*order).limit(query.page_size + 1).subquery("page")
        page_order = [page.c.sort_key, page.c.id]
        statement = (
            _view_select(page)
            .add_columns(page.c.sort_key)
            .order_by(*(column.desc() if descending else column.asc() for column in page_order))
        )
        rows = (await self.session.execute(statement)).all()
        shown = rows[: query.page_size]
        next_cursor = (
            _encode_cursor(shown[-1].sort_key, shown[-1].id)
            if len(rows) > query.page_size
            else None
        )
        return [_view(row) for row in shown], next_cursor

    def _filters(self, query: TaskQuery) -> list[ColumnElement[bool]]:
        filters = [Task.is_deleted.is_(False)]
        if query.status is not None:
            filters.append(Task.status == query.status)
        if query.priority is not None:
            filters.append(Task.priority == query.priority)
        if query.assigned_to is not None:
            filters.append(Task.assigned_to == query.assigned_to)
        if query.tag is not None:
            tagged = (
                select(task_tags.c.task_id)
                .join(Tag, Tag.id == task_tags.c.tag_id)
                .where(func.lower(Tag.name) == query.tag.lower())
            )
            filters.append(Task.id.in_(tagged))
        if query.search is not None:
            pattern = f"%{_escape_like(query.search)}%"
            filters.append(
                or_(
                    Task.title.ilike(pattern, escape="\\"),
                    Task.description.ilike(pattern, escape="\\"),
                )
            )
        return filters

    async def upsert_tags(self, names: list[str]) -> dict[str, Tag]:
        """Tags by lower-cased name, created on first use (two statements for any number)."""
        unique: dict[str, str] = {}
        for name in names:  # the first spelling of a new tag names it
            unique.setdefault(name.lower(), name)
        if not unique:
            return {}
        statement = pg_insert(Tag).values(
            [
                {"id": uuid.uuid4(), "name": name, "color": tag_color(name)}
                for name in unique.values()
            ]
        )
        await self.session.execute(
            statement.on_conflict_do_nothing(index_elements=[func.lower(Tag.name)])
        )
        # In the order a task's tags are shown (TAGS_JSON's, the database's collation).
        tags = await self.session.scalars(
            select(Tag).where(func.lower(Tag.name).in_(unique)).order_by(Tag.name)
        )
        return {tag.name.lower(): tag for tag in tags}

    async def set_tags(self, task_ids_to_tag_ids: dict[uuid.UUID, list[uuid.UUID]]) -> None:
        await self.session.execute(
            delete(task_tags).where(task_tags.c.task_id.in_(task_ids_to_tag_ids))
        )
        await self.add_tags(task_ids_to_tag_ids)

    async def add_tags(self, task_ids_to_tag_ids: dict[uuid.UUID, list[uuid.UUID]]) -> None:
        """Tags of tasks that have none yet (new ones): nothing to delete first."""
        pairs = [
            {"task_id": task_id, "tag_id": tag_id}
            for task_id, tag_ids in task_ids_to_tag_ids.items()
            for tag_id in dict.fromkeys(tag_ids)
        ]
        if pairs:
            await self.session.execute(_INSERT_TASK_TAGS, {"rows": DICTS.dump_json(pairs).decode()})

    async def sweep_overdue(self) -> list[uuid.UUID]:
        """Flip every live task past its due date to overdue, in one statement; the ids of the
        flipped tasks (a task already overdue is not flipped again)."""
        result = await self.session.scalars(
            update(Task)
            .where(
                Task.is_deleted.is_(False),
                Task.status.in_([TaskStatus.TODO, TaskStatus.IN_PROGRESS]),
                Task.due_date < func.now(),
            )
            .values(status=TaskStatus.OVERDUE, updated_at=func.now())
            .returning(Task.id)
        )
        return list(result)


def _encode_cursor(sort_value: Any, task_id: uuid.UUID) -> str:
    value = sort_value.isoformat() if isinstance(sort_value, datetime) else str(sort_value)
    raw = json.dumps([value, str(task_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort_key: ColumnElement[Any]) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded))
        # _encode_cursor writes a list of two strings: the sort value and the id.
        if not isinstance(decoded, list) or not all(isinstance(item, str) for item in decoded):
            raise TypeError(decoded)
        value, task_id = decoded
        if "\x00" in value:
            raise ValueError(value)
        if isinstance(sort_key.type, DateTime):
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:  # written from a timestamptz: always with its offset
                raise ValueError(value)
        elif isinstance(sort_key.type, Enum) and value not in sort_key.type.enums:
            raise ValueError(value)
        return value, uuid.UUID(task_id)
    except (ValueError, TypeError) as exc:
        raise invalid_field("cursor", "Invalid cursor", location="query") from exc
