"""Every query of the analytics service, on its read model."""

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic_core import to_json
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Date,
    Float,
    Row,
    Select,
    Subquery,
    Table,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.models import Backfill, TaskCount, TaskFact, TaskHistory, TaskTagCount
from taskhub_common.contracts import TaskData
from taskhub_common.db import json_rows
from taskhub_common.users import users

facts = TaskFact.__table__
history = TaskHistory.__table__
counts = TaskCount.__table__
tag_counts = TaskTagCount.__table__

STATUSES = ("todo", "in_progress", "completed", "overdue")
PRIORITIES = ("low", "medium", "high", "urgent")
OPEN_STATUSES = ("todo", "in_progress")
PERCENTILES = (0.5, 0.75, 0.9, 0.95)
# Completed, with a completion time: what trends, burn-up and durations count as done.
COMPLETED = (facts.c.status == "completed", facts.c.completed_at.is_not(None))
# Fields an event sets only when it is newer than what the row holds.
VERSIONED_FIELDS = (
    "title",
    "description",
    "status",
    "priority",
    "due_date",
    "completed_at",
    "created_by",
    "assigned_to",
    "tags",
    "created_at",
)


@dataclass(frozen=True)
class Filters:
    """The filters every endpoint takes; `created_from`/`created_to` bound the creation day
    (inclusive, UTC)."""

    assigned_to: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    tag: str | None = None
    created_from: date | None = None
    created_to: date | None = None

    def key(self) -> str:
        return "|".join(
            str(value or "")
            for value in (
                self.assigned_to,
                self.created_by,
                self.tag,
                self.created_from,
                self.created_to,
            )
        )

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [facts.c.is_deleted.is_(False)]
        if self.assigned_to is not None:
            where.append(facts.c.assigned_to == self.assigned_to)
        if self.created_by is not None:
            where.append(facts.c.created_by == self.created_by)
        if self.tag is not None:
            where.append(facts.c.tags.contains([self.tag]))
        if self.created_from is not None:
            where.append(facts.c.created_at >= day_start(self.created_from))
        if self.created_to is not None:
            where.append(facts.c.created_at < day_start(self.created_to + timedelta(days=1)))
        return where

    def tally(self) -> Subquery:
        """The filtered tasks as (key, tasks) rows: the key is task_counts' (assignee, status,
        priority, creation day, completion day, due kind), `tasks` how many share it. From
        task_counts, or task_tag_counts for a tag: a few rows per key whatever the number of
        tasks."""
        source = counts if self.tag is None else tag_counts
        where = [] if self.tag is None else [tag_counts.c.tag == self.tag]
        if self.assigned_to is not None:
            where.append(source.c.assigned_to == self.assigned_to)
        if self.created_by is not None:
            where.append(source.c.created_by == self.created_by)
        if self.created_from is not None:
            where.append(source.c.created_day >= self.created_from)
        if self.created_to is not None:
            where.append(source.c.created_day <= self.created_to)
        return (
            select(
                source.c.assigned_to,
                source.c.status,
                source.c.priority,
                source.c.created_day,
                source.c.completed_day,
                source.c.due_kind,
                source.c.tasks,
            )
            .where(*where)
            .subquery()
        )


def days(first_day: date, last_day: date) -> list[date]:
    return [first_day + timedelta(days=n) for n in range((last_day - first_day).days + 1)]


def utc_day(moment: ColumnElement[datetime]) -> ColumnElement[date]:
    return cast(func.timezone("UTC", moment), Date)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def fact_values(task: TaskData) -> dict[str, Any]:
    return {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "status": task.status,
        "priority": task.priority,
        "due_date": task.due_date,
        "completed_at": task.completed_at,
        "is_deleted": task.is_deleted,
        "created_by": task.created_by,
        "assigned_to": task.assigned_to,
        "tags": [tag.name for tag in task.tags],
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "started_at": task.updated_at if task.status == "in_progress" else None,
    }


def _by_id(row: dict[str, Any]) -> uuid.UUID:
    return row["id"]


def _fold(rows: list[dict[str, Any]]) -> dict[uuid.UUID, dict[str, Any]]:
    """One row per task, with what UPSERT_FACTS would leave after taking the rows in order: the
    fields of the newest version (the first of equals), deleted if any says so, the earliest
    start."""
    folded: dict[uuid.UUID, dict[str, Any]] = {}
    for row in rows:
        held = folded.get(row["id"])
        if held is None:
            folded[row["id"]] = row
            continue
        newest = row if row["updated_at"] > held["updated_at"] else held
        starts = [start for start in (held["started_at"], row["started_at"]) if start is not None]
        folded[row["id"]] = newest | {
            "is_deleted": held["is_deleted"] or row["is_deleted"],
            "started_at": min(starts, default=None),
        }
    return folded


def _names(table: Table) -> list[str]:
    """The columns a write sets (not those PostgreSQL computes)."""
    return [column.name for column in table.columns if column.computed is None]


def _upsert_facts():
    statement = insert(facts).from_select(_names(facts), json_rows(facts, _names(facts)))
    incoming = statement.excluded
    newer = facts.c.updated_at < incoming.updated_at
    return statement.on_conflict_do_update(
        index_elements=[facts.c.id],
        set_={
            **{
                name: case((newer, incoming[name]), else_=facts.c[name])
                for name in VERSIONED_FIELDS
            },
            "updated_at": func.greatest(facts.c.updated_at, incoming.updated_at),
            "is_deleted": facts.c.is_deleted | incoming.is_deleted,
            # LEAST ignores NULLs: the earliest in-progress sighting, in whatever order.
            "started_at": func.least(facts.c.started_at, incoming.started_at),
        },
    )


UPSERT_FACTS = _upsert_facts()
INSERT_HISTORY = (
    insert(history)
    .from_select(_names(history), json_rows(history, _names(history)))
    .on_conflict_do_nothing(index_elements=[history.c.task_id, history.c.changed_at])
)


# Writers of the model take turns, a transaction at a time (decision 0065). One upsert locks
# facts in id order, then its triggers lock count rows in key order: two such statements cannot
# deadlock. But a consumer transaction may upsert twice (its batch's task events split by a
# user event) and holds the first upsert's count rows meanwhile; a rebuild page locking a task
# of the second upsert would then wait for those rows while the consumer waits for the task.
# Taken before any row lock and held to commit, the lock leaves no such cycle. Keyed by
# task_facts' oid: one lock per schema.
WRITERS_ONE_AT_A_TIME = text("SELECT pg_advisory_xact_lock('task_facts'::regclass::oid::bigint)")


class AnalyticsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # Writes: order-safe and idempotent (see UPSERT_FACTS).

    async def apply(self, tasks: Sequence[TaskData]) -> None:
        """Take tasks as events or the export describe them: one statement each table, the
        batch its one parameter (not one execution per row: task_counts' triggers then run
        once, on the whole batch). A task described more than once is folded into one row
        first, as the upsert would fold them one after another (a statement may touch a row
        only once); rows go in id order, so two writers lock them in the same order."""
        rows = sorted(_fold([fact_values(task) for task in tasks]).values(), key=_by_id)
        if not rows:
            return
        await self.session.execute(WRITERS_ONE_AT_A_TIME)
        await self.session.execute(UPSERT_FACTS, {"rows": to_json(rows).decode()})
        changes = [
            {
                "task_id": task.id,
                "changed_at": task.updated_at,
                "status": task.status,
                "assigned_to": task.assigned_to,
            }
            for task in tasks
        ]
        await self.session.execute(INSERT_HISTORY, {"rows": to_json(changes).decode()})

    async def backfill_done(self) -> bool:
        return (await self.session.scalar(select(func.count()).select_from(Backfill))) > 0

    async def record_backfill(self, tasks: int) -> None:
        await self.session.execute(
            insert(Backfill).values(tasks=tasks, finished_at=datetime.now(UTC))
        )

    # Reads.

    async def overview(self, filters: Filters) -> dict[str, Any]:
        tally = filters.tally()
        # One statement (each round trip costs on a busy machine): the past-due count is an
        # uncorrelated subquery, run once. No group means no visible task, so none past due.
        past_due = select(func.count()).select_from(facts).where(*self._past_due(filters))
        counted = (
            await self.session.execute(
                select(
                    tally.c.status,
                    tally.c.priority,
                    func.sum(tally.c.tasks),
                    past_due.scalar_subquery(),
                )
                .group_by(tally.c.status, tally.c.priority)
                .having(func.sum(tally.c.tasks) > 0)
            )
        ).all()
        by_status = dict.fromkeys(STATUSES, 0)
        by_priority = dict.fromkeys(PRIORITIES, 0)
        open_past_due = 0
        for status, priority, count, late in counted:
            by_status[status] = by_status.get(status, 0) + count
            by_priority[priority] = by_priority.get(priority, 0) + count
            open_past_due = late
        return {
            "total_tasks": sum(by_status.values()),
            "completed": by_status["completed"],
            "in_progress": by_status["in_progress"],
            "todo": by_status["todo"],
            # Marked overdue by the sweep, or open and past due (the sweep runs every few
            # minutes; the answer does not wait for it).
            "overdue": by_status["overdue"] + open_past_due,
            "by_priority": by_priority,
            "by_status": by_status,
        }

    @staticmethod
    def _past_due(filters: Filters) -> list[ColumnElement[bool]]:
        """Open tasks past their due date (ix_task_facts_open_due: the sweep keeps them few)."""
        return [
            *filters.conditions(),
            facts.c.due_date.is_not(None),
            facts.c.status.in_(OPEN_STATUSES),
            facts.c.due_date < func.now(),
        ]

    async def performance(self, filters: Filters) -> list[Row]:
        tally = filters.tally()
        completed = tally.c.status == "completed"

        def tasks(*conditions: ColumnElement[bool]) -> ColumnElement[int]:
            total = func.sum(tally.c.tasks)
            return func.coalesce(total.filter(*conditions), 0) if conditions else total

        per_user = (
            select(
                tally.c.assigned_to.label("user_id"),
                tasks().label("total_assigned"),
                tasks(completed).label("completed"),
                tasks(tally.c.status == "in_progress").label("in_progress"),
                tasks(tally.c.status == "overdue").label("marked_overdue"),
                tasks(completed, tally.c.due_kind != "none").label("completed_with_due_date"),
                tasks(completed, tally.c.due_kind == "on_time").label("completed_on_time"),
                # Completed with a completion time: those with a cycle time.
                tasks(tally.c.completed_day.is_not(None)).label("timed"),
            )
            .where(tally.c.assigned_to.is_not(None))
            .group_by(tally.c.assigned_to)
            .having(func.sum(tally.c.tasks) > 0)
            .subquery()
        )
        past_due = (
            select(facts.c.assigned_to, func.count().label("tasks"))
            .where(*self._past_due(filters), facts.c.assigned_to.is_not(None))
            .group_by(facts.c.assigned_to)
            .subquery()
        )
        # A median needs the tasks themselves: the middle one or two of the assignee's
        # `timed` tasks in ix_task_facts_assignee_cycle, read past the others (the filters'
        # columns are in the index too), not a sort of all of them.
        middle = (
            select(facts.c.cycle_hours)
            .where(
                *filters.conditions(),
                facts.c.cycle_hours.is_not(None),
                facts.c.assigned_to == per_user.c.user_id,
            )
            .order_by(facts.c.cycle_hours)
            .offset((per_user.c.timed - 1) // 2)
            .limit(2 - per_user.c.timed % 2)
            .correlate(per_user)
            .subquery()
        )
        median = select(func.avg(middle.c.cycle_hours)).correlate(per_user).scalar_subquery()
        statement = (
            select(
                per_user.c.user_id,
                per_user.c.total_assigned,
                per_user.c.completed,
                per_user.c.in_progress,
                (per_user.c.marked_overdue + func.coalesce(past_due.c.tasks, 0)).label("overdue"),
                per_user.c.completed_with_due_date,
                per_user.c.completed_on_time,
                median.label("median_cycle_time_hours"),
                users.c.username,
                users.c.full_name,
            )
            .select_from(
                per_user.outerjoin(
                    past_due, past_due.c.assigned_to == per_user.c.user_id
                ).outerjoin(users, users.c.id == per_user.c.user_id)
            )
            .order_by(users.c.username, per_user.c.user_id)
        )
        return list((await self.session.execute(statement)).all())

    async def trends(
        self, filters: Filters, first_day: date, last_day: date
    ) -> list[tuple[date, int, int]]:
        """Per UTC day: tasks created, and tasks completed (by completion time) that day."""
        created, completed = await self._per_day(filters.tally(), first_day)
        return [
            (day, created.get(day, 0), completed.get(day, 0)) for day in days(first_day, last_day)
        ]

    async def burnup(
        self, filters: Filters, first_day: date, last_day: date
    ) -> list[tuple[date, int, int]]:
        """Per UTC day: tasks created by its end (the scope) and completed by its end (done)."""
        created, completed = await self._per_day(filters.tally(), first_day)
        before = first_day - timedelta(days=1)
        scope, done = created.get(before, 0), completed.get(before, 0)
        rows = []
        for day in days(first_day, last_day):
            scope += created.get(day, 0)
            done += completed.get(day, 0)
            rows.append((day, scope, done))
        return rows

    async def _per_day(
        self, tally: Subquery, first_day: date
    ) -> tuple[dict[date, int], dict[date, int]]:
        """How many tasks of `tally` were created, and completed, on each UTC day from
        `first_day` on; the days before it all count as the day before it. One statement."""
        before = literal(first_day - timedelta(days=1), Date)

        def per_day(kind: str, day: ColumnElement[date]) -> Select:
            bucket = func.greatest(day, before)
            return (
                select(literal(kind).label("kind"), bucket, func.sum(tally.c.tasks))
                .where(day.is_not(None))
                .group_by(bucket)
            )

        statement = union_all(
            per_day("created", tally.c.created_day), per_day("completed", tally.c.completed_day)
        )
        counted: dict[str, dict[date, int]] = {"created": {}, "completed": {}}
        for kind, day, count in await self.session.execute(statement):
            counted[kind][day] = count
        return counted["created"], counted["completed"]

    async def completed_durations(self, filters: Filters) -> Row:
        """How many tasks are completed, and the PERCENTILES of their lead (created → completed)
        and cycle (first in progress → completed) times in hours."""

        def percentiles(start: ColumnElement) -> ColumnElement:
            hours = func.extract("epoch", facts.c.completed_at - start) / 3600
            fractions = literal_column(f"ARRAY{list(PERCENTILES)}::float8[]")
            return type_coerce(func.percentile_cont(fractions).within_group(hours), ARRAY(Float))

        statement = select(
            func.count().label("count"),
            percentiles(facts.c.created_at).label("lead"),
            percentiles(func.coalesce(facts.c.started_at, facts.c.created_at)).label("cycle"),
        ).where(
            *filters.conditions(),
            facts.c.status == "completed",
            facts.c.completed_at.is_not(None),
        )
        return (await self.session.execute(statement)).one()

    async def hours_in_status(self, filters: Filters) -> list[Row]:
        """Per status: the hours the tasks spent in it (each history entry lasts until the next
        one, the last until now unless completed) and how many tasks were ever in it."""
        task_ids = select(facts.c.id).where(*filters.conditions())
        next_change = func.lead(history.c.changed_at).over(
            partition_by=history.c.task_id, order_by=history.c.changed_at
        )
        spans = (
            select(
                history.c.task_id,
                history.c.status,
                history.c.changed_at,
                next_change.label("until"),
            )
            .where(history.c.task_id.in_(task_ids))
            .subquery()
        )
        ends = func.coalesce(
            spans.c.until,
            case((spans.c.status == "completed", spans.c.changed_at), else_=func.now()),
        )
        statement = select(
            spans.c.status,
            func.sum(func.extract("epoch", ends - spans.c.changed_at) / 3600).label("hours"),
            func.count(spans.c.task_id.distinct()).label("tasks"),
        ).group_by(spans.c.status)
        return list((await self.session.execute(statement)).all())

    async def export_rows(self, filters: Filters) -> AsyncIterator[Row]:
        """The export's rows, streamed from a server-side cursor (memory does not grow with
        the number of rows)."""
        statement = (
            select(
                facts.c.id,
                facts.c.title,
                facts.c.description,
                facts.c.status,
                facts.c.priority,
                users.c.username.label("assignee"),
                facts.c.tags,
                facts.c.due_date,
                facts.c.created_at,
                facts.c.completed_at,
            )
            .select_from(facts.outerjoin(users, users.c.id == facts.c.assigned_to))
            .where(*filters.conditions())
            .order_by(facts.c.created_at, facts.c.id)
            .execution_options(yield_per=1000)
        )
        result = await self.session.stream(statement)
        async for row in result:
            yield row
