"""The tasks use cases. No HTTP here; the request's transaction is committed by the route."""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.cache import GenerationalCache
from taskhub_common.contracts import (
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_OVERDUE,
    TASK_UPDATED,
    TaskData,
)
from taskhub_common.db import after_commit
from taskhub_common.errors import Conflict, NotFound, NotPermitted, invalid_field
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import add_events
from taskhub_common.tasks_client import TaskReference
from taskhub_common.users import PublicUser, active_user_ids
from tasks.models import Task, TaskStatus
from tasks.repository import TaskRepository
from tasks.schemas import (
    DICTS,
    BulkCreate,
    TagOut,
    TaskCreate,
    TaskList,
    TaskOut,
    TaskQuery,
    TaskUpdate,
)

# Fields a PUT may change, and how a change of each is reported in `changes`.
UPDATABLE = (
    "title",
    "description",
    "status",
    "priority",
    "start_date",
    "due_date",
    "assigned_to",
    "notify_overdue",
)

# A task as the API shows it, and as task events carry it (task.created has no `changes`): the
# keys of the views built from rows, in the models' order.
TASK_FIELDS = tuple(TaskOut.model_fields)
EVENT_FIELDS = tuple(name for name in TaskData.model_fields if name != "changes")


def derive_status(start_date: datetime | None, due_date: datetime | None) -> TaskStatus:
    """The status of a task given none: overdue past its due date, started past its start."""
    now = datetime.now(UTC)
    if due_date is not None and due_date < now:
        return TaskStatus.OVERDUE
    if start_date is not None and start_date <= now:
        return TaskStatus.IN_PROGRESS
    return TaskStatus.TODO


class TaskService:
    def __init__(
        self,
        session: AsyncSession,
        cache: GenerationalCache,
        producer: str,
        # None for a system action (the overdue sweep): its events have no actor.
        caller_id: uuid.UUID | None,
    ) -> None:
        self.session = session
        self.cache = cache
        self.producer = producer
        self.caller_id = caller_id
        self.tasks = TaskRepository(session)

    # Reads: every active user reads every task.

    async def get_json(self, task_id: uuid.UUID) -> bytes:
        key = f"task:{task_id}"
        cached, generation = await self.cache.get(key)
        if cached is not None:
            return cached
        presented = await self._present([task_id])
        if not presented:
            raise NotFound("Task not found")
        body = presented[0].model_dump_json().encode()
        await self.cache.set(key, body, generation)
        return body

    async def list_json(self, query: TaskQuery) -> bytes:
        filters = query.model_dump_json(
            exclude_none=True, exclude={"page", "page_size", "sort_by", "sort_order", "cursor"}
        )
        key = "list:" + query.model_dump_json(exclude_none=True)
        # The total depends on the filters only: every page of one filter shares it.
        (cached, cached_total), generation = await self.cache.get_many([key, "count:" + filters])
        if cached is not None:
            return cached
        if cached_total is not None:
            total = int(cached_total)
        else:
            total = await self.tasks.count(query)
            await self.cache.set("count:" + filters, str(total).encode(), generation)
        views, next_cursor = await self.tasks.find_page(query)
        body = TaskList(
            tasks=[TaskOut.model_validate(view) for view in views],
            total=total,
            page=query.page,
            page_size=query.page_size,
            total_pages=(total + query.page_size - 1) // query.page_size,
            next_cursor=next_cursor,
        )
        encoded = body.model_dump_json().encode()
        await self.cache.set(key, encoded, generation)
        return encoded

    # Writes.

    async def create(self, body: TaskCreate) -> TaskOut:
        return TaskOut.model_validate((await self.create_many(BulkCreate(tasks=[body])))[0])

    async def create_many(self, body: BulkCreate) -> list[dict[str, Any]]:
        """All or nothing: every task is checked before any is written. Set-based: one statement
        each for the tasks, their tags and their events, whatever the batch's size; the tasks
        are shown from the rows as written, with tags and people looked up once per batch (no
        read back, no per-task validation of what was just created)."""
        assignees = {task.assigned_to for task in body.tasks if task.assigned_to}
        await self._check_assignees(
            assignees, field="assigned_to" if len(body.tasks) == 1 else "tasks"
        )
        tags = await self.tasks.upsert_tags([name for task in body.tasks for name in task.tags])
        shown_tags = {tag.id: TagOut.model_validate(tag).model_dump() for tag in tags.values()}
        # The batch's tags in shown order (upsert_tags gives them so): each task's sorted by it.
        rank = {tag_id: position for position, tag_id in enumerate(shown_tags)}
        people = {
            user_id: PublicUser.model_validate(row).model_dump()
            for user_id, row in (await self.tasks.people(assignees | {self.caller_id})).items()
        }
        now = datetime.now(UTC)
        rows, tag_ids = [], {}
        for task in body.tasks:
            status = task.status or derive_status(task.start_date, task.due_date)
            task_id = uuid.uuid4()
            rows.append(
                {
                    "id": task_id,
                    **task.model_dump(exclude={"tags", "status"}),
                    "status": status,
                    "completed_at": now if status == TaskStatus.COMPLETED else None,
                    "created_by": self.caller_id,
                }
            )
            ids = dict.fromkeys(tags[name.lower()].id for name in task.tags)
            tag_ids[task_id] = sorted(ids, key=rank.__getitem__)
        written = {row["id"]: row for row in await self.tasks.insert_many(DICTS.dump_json(rows))}
        await self.tasks.add_tags(tag_ids)
        views = []
        for row in rows:
            stored = written[row["id"]]
            view = {
                **stored,
                "creator": people.get(stored["created_by"]),
                "assignee": people.get(stored["assigned_to"]),
                "tags": [shown_tags[tag_id] for tag_id in tag_ids[row["id"]]],
                "files": [],
                "comments": [],
            }
            views.append({name: view[name] for name in TASK_FIELDS})
        await self._publish_data(
            [
                (TASK_CREATED, view["id"], {name: view[name] for name in EVENT_FIELDS})
                for view in views
            ]
        )
        return views

    async def update(self, task_id: uuid.UUID, body: TaskUpdate) -> TaskOut:
        task = await self._get(task_id, for_update=True)
        if self.caller_id not in (task.created_by, task.assigned_to):
            raise NotPermitted("Only the task's creator or assignee may change it")
        requested = body.model_dump(include=set(UPDATABLE), exclude_unset=True)
        start = requested.get("start_date", task.start_date)
        due = requested.get("due_date", task.due_date)
        if start is not None and due is not None and start > due:
            raise invalid_field("start_date", "start_date must not be after due_date")
        if requested.get("assigned_to") and requested["assigned_to"] != task.assigned_to:
            await self._check_assignees({requested["assigned_to"]}, field="assigned_to")
        dates_moved = "start_date" in requested or "due_date" in requested
        if "status" not in requested and dates_moved and task.status != TaskStatus.COMPLETED:
            requested["status"] = derive_status(start, due)
        changes = {key: value for key, value in requested.items() if getattr(task, key) != value}
        if "status" in changes:
            task.completed_at = (
                datetime.now(UTC) if changes["status"] == TaskStatus.COMPLETED else None
            )
        for key, value in changes.items():
            setattr(task, key, value)
        if body.tags is not None:
            old_tags = sorted(tag.name.lower() for tag in task.tags)
            tags = await self.tasks.upsert_tags(body.tags)
            new_ids = [tags[name.lower()].id for name in body.tags]
            if sorted(tags) != old_tags:
                changes["tags"] = [
                    tags[name].name for name in dict.fromkeys(n.lower() for n in body.tags)
                ]
            await self.tasks.set_tags({task.id: new_ids})
        if changes:
            task.updated_at = datetime.now(UTC)  # a change of tags alone touches no column
        await self.session.flush()
        presented = (await self._present([task_id]))[0]
        if changes:
            await self._publish([(self._update_event_type(changes), presented, changes)])
        return presented

    async def delete(self, task_id: uuid.UUID) -> None:
        task = await self._get(task_id, for_update=True)
        if task.created_by != self.caller_id:
            raise NotPermitted("Only the task's creator may delete it")
        task.is_deleted = True
        await self.session.flush()
        presented = (await self._present([task_id], include_deleted=True))[0]
        await self._publish([(TASK_DELETED, presented, {"is_deleted": True})])

    async def notify_overdue(self, task_id: uuid.UUID) -> None:
        """Send the overdue notice now: one task.overdue event, as the sweep would emit."""
        task = await self._get(task_id)
        if self.caller_id not in (task.created_by, task.assigned_to):
            raise NotPermitted("Only the task's creator or assignee may send its overdue notice")
        overdue = task.status == TaskStatus.OVERDUE or (
            task.due_date is not None
            and task.due_date < datetime.now(UTC)
            and task.status != TaskStatus.COMPLETED
        )
        if not overdue:
            raise Conflict("The task is not overdue")
        presented = (await self._present([task_id]))[0]
        await self._publish([(TASK_OVERDUE, presented, None)], invalidate=False)

    async def reference(self, task_id: uuid.UUID) -> TaskReference:
        return TaskReference.model_validate(await self._get(task_id), from_attributes=True)

    async def sweep_overdue(self) -> int:
        """Flip every task past its due date to overdue, with one task.overdue event per flipped
        task: a task flips once, so it is announced once (a system action: no actor)."""
        swept = await self.tasks.sweep_overdue()
        if swept:
            presented = await self._present(swept)
            await self._publish([(TASK_OVERDUE, task, None) for task in presented])
        return len(swept)

    # Helpers.

    async def _get(self, task_id: uuid.UUID, for_update: bool = False) -> Task:
        task = await self.tasks.get(task_id, for_update=for_update)
        if task is None:
            raise NotFound("Task not found")
        return task

    async def _check_assignees(self, ids: set[uuid.UUID], field: str) -> None:
        unknown = ids - await active_user_ids(self.session, ids)
        if unknown:
            names = ", ".join(sorted(str(user_id) for user_id in unknown))
            raise invalid_field(field, f"assigned_to must name an active user (not {names})")

    async def _present(
        self, task_ids: list[uuid.UUID], include_deleted: bool = False
    ) -> list[TaskOut]:
        views = await self.tasks.views(task_ids, include_deleted=include_deleted)
        return [TaskOut.model_validate(view) for view in views]

    @staticmethod
    def _update_event_type(changes: dict[str, Any]) -> str:
        """One event per write, the most telling one; `changes` says everything that changed."""
        if changes.get("status") == TaskStatus.COMPLETED:
            return TASK_COMPLETED
        if changes.get("assigned_to"):
            return TASK_ASSIGNED
        return TASK_UPDATED

    async def _publish(
        self,
        events: list[tuple[str, TaskOut, dict[str, Any] | None]],
        invalidate: bool = True,
    ) -> None:
        data = []
        for event_type, task, changes in events:
            # Built through the contract, so every task event has one shape.
            shown = TaskData.model_validate(task, from_attributes=True)
            shown.changes = changes
            exclude = {"changes"} if changes is None else None
            data.append((event_type, task.id, shown.model_dump(exclude=exclude)))
        await self._publish_data(data, invalidate)

    async def _publish_data(
        self, events: list[tuple[str, uuid.UUID, dict[str, Any]]], invalidate: bool = True
    ) -> None:
        """Events of (type, task id, data): Python values here, the outbox writes them as JSON.
        (EventEnvelope() over model_construct(): its validation, in Rust, costs less than
        model_construct's Python loop over the fields.)"""
        await add_events(
            self.session,
            [
                EventEnvelope(
                    type=event_type,
                    producer=self.producer,
                    actor_id=self.caller_id,
                    aggregate_id=task_id,
                    data=data,
                )
                for event_type, task_id, data in events
            ],
        )
        if invalidate:
            after_commit(self.session, self.cache.invalidate)
