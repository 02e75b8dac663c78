import re
import uuid
from datetime import date
from typing import Annotated

from pydantic import BaseModel, BeforeValidator

ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def iso_day_only(value: object) -> object:
    """A day is written YYYY-MM-DD: pydantic alone would also read `0` or `1700000000` as a
    Unix time, and a filter nobody meant would answer 200."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


IsoDay = Annotated[date, BeforeValidator(iso_day_only)]


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
