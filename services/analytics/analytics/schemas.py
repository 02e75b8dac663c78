import uuid
from datetime import date

from pydantic import BaseModel


class Overview(BaseModel):
    total_tasks: int
    completed: int
    in_progress: int
    todo: int
    overdue: int
    by_priority: dict[str, int]
    by_status: dict[str, int]


class UserPerformance(BaseModel):
    user_id: uuid.UUID
    username: str | None
    full_name: str | None
    total_assigned: int
    completed: int
    in_progress: int
    # Percent of the assigned tasks that are completed.
    completion_rate: float
    overdue: int
    # Percent of the completed tasks with a due date that were completed by it; None: none.
    on_time_rate: float | None
    median_cycle_time_hours: float | None


class TrendDay(BaseModel):
    date: date
    created: int
    completed: int


class BurnupDay(BaseModel):
    date: date
    # Tasks created by the end of the day (not deleted), and of those, completed by then.
    scope: int
    done: int


class Percentiles(BaseModel):
    count: int
    p50: float | None
    p75: float | None
    p90: float | None
    p95: float | None


class StatusTime(BaseModel):
    total_hours: float
    # Mean over the tasks that were ever in the status.
    mean_hours: float


class CycleTime(BaseModel):
    lead_time_hours: Percentiles
    cycle_time_hours: Percentiles
    time_in_status: dict[str, StatusTime]
