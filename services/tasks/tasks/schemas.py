import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from taskhub_common.users import PublicUser
from tasks.models import TaskPriority, TaskStatus


def _as_utc(value: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC; every time is stored and returned in UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        # e.g. 9999-12-31T23:00-05:00 is past the last representable UTC time: bad input.
        raise ValueError("the time is out of range") from None


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
TagName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Description = Annotated[str, StringConstraints(max_length=10_000)]


class _DatesInOrder(BaseModel):
    @model_validator(mode="after")
    def start_before_due(self) -> "_DatesInOrder":
        start, due = getattr(self, "start_date", None), getattr(self, "due_date", None)
        if start is not None and due is not None and start > due:
            raise ValueError("start_date must not be after due_date")
        return self


class TaskCreate(_DatesInOrder):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description | None = None
    status: TaskStatus | None = None
    priority: TaskPriority = TaskPriority.MEDIUM
    start_date: UtcDateTime | None = None
    due_date: UtcDateTime | None = None
    assigned_to: uuid.UUID | None = None
    tags: list[TagName] = Field(default_factory=list, max_length=20)
    notify_overdue: bool = True


class TaskUpdate(_DatesInOrder):
    """Partial: a field left out is kept, an explicit null clears it (where it may be empty)."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    start_date: UtcDateTime | None = None
    due_date: UtcDateTime | None = None
    assigned_to: uuid.UUID | None = None
    tags: list[TagName] | None = Field(default=None, max_length=20)
    notify_overdue: bool | None = None

    @model_validator(mode="after")
    def required_fields_not_null(self) -> "TaskUpdate":
        for name in ("title", "status", "priority", "notify_overdue"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class BulkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskCreate] = Field(min_length=1, max_length=1000)


class TagOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    color: str
    created_at: datetime


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    description: str | None
    status: TaskStatus
    priority: TaskPriority
    start_date: datetime | None
    due_date: datetime | None
    completed_at: datetime | None
    notify_overdue: bool
    is_deleted: bool
    created_by: uuid.UUID
    assigned_to: uuid.UUID | None
    creator: PublicUser | None = None
    assignee: PublicUser | None = None
    tags: list[TagOut]
    # Composed by the gateway from the comments and files services.
    files: list[dict[str, Any]] = Field(default_factory=list)
    comments: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime


class TaskList(BaseModel):
    tasks: list[TaskOut]
    total: int
    page: int
    page_size: int
    total_pages: int
    # Opaque; pass it back as `cursor` for the next page without OFFSET.
    next_cursor: str | None


SortField = Literal["created_at", "updated_at", "due_date", "title", "priority", "status"]


class TaskQuery(BaseModel):
    """The list endpoint's query: filters, sort and paging."""

    # Bounded so that the offset fits PostgreSQL's bigint: past the end is an empty page.
    page: int = Field(1, ge=1, le=10**12)
    page_size: int = Field(10, ge=1, le=100)
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    assigned_to: uuid.UUID | None = None
    tag: TagName | None = None
    search: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    sort_by: SortField = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    cursor: str | None = Field(None, max_length=500)


# Plain dicts (a batch's rows, views built from them) as one JSON array, each value serialised
# by its type as a model field of that type would be: one pass, no model per item.
DICTS = TypeAdapter(list[dict[str, Any]])


class OverdueNotice(BaseModel):
    detail: str
    task_id: uuid.UUID


class SweepResult(BaseModel):
    marked_overdue: int
