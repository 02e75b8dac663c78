"""The analytics rules: what each endpoint answers, cached until an event changes the model."""

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from analytics.repository import PERCENTILES, STATUSES, AnalyticsRepository, Filters
from analytics.schemas import (
    BurnupDay,
    CycleTime,
    Overview,
    Percentiles,
    StatusTime,
    TrendDay,
    UserPerformance,
)
from taskhub_common.cache import GenerationalCache

PERFORMANCE = TypeAdapter(list[UserPerformance])
TRENDS = TypeAdapter(list[TrendDay])
BURNUP = TypeAdapter(list[BurnupDay])


def percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def today() -> date:
    return datetime.now(UTC).date()


class AnalyticsService:
    def __init__(self, repository: AnalyticsRepository, cache: GenerationalCache) -> None:
        self.repository = repository
        self.cache = cache

    async def _cached(self, key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        """One query per change of the model, however many dashboards poll."""
        cached, generation = await self.cache.get(key)
        if cached is not None:
            return cached
        body = await compute()
        await self.cache.set(key, body, generation)
        return body

    async def overview_json(self, filters: Filters) -> bytes:
        async def compute() -> bytes:
            overview = Overview(**await self.repository.overview(filters))
            return overview.model_dump_json().encode()

        return await self._cached(f"overview:{filters.key()}", compute)

    async def performance_json(self, filters: Filters) -> bytes:
        async def compute() -> bytes:
            rows = await self.repository.performance(filters)
            return PERFORMANCE.dump_json([self._performance(row._mapping) for row in rows])

        return await self._cached(f"performance:{filters.key()}", compute)

    @staticmethod
    def _performance(row: Any) -> UserPerformance:
        median = row["median_cycle_time_hours"]
        return UserPerformance(
            user_id=row["user_id"],
            username=row["username"],
            full_name=row["full_name"],
            total_assigned=row["total_assigned"],
            completed=row["completed"],
            in_progress=row["in_progress"],
            completion_rate=percent(row["completed"], row["total_assigned"]),
            overdue=row["overdue"],
            on_time_rate=(
                percent(row["completed_on_time"], row["completed_with_due_date"])
                if row["completed_with_due_date"]
                else None
            ),
            median_cycle_time_hours=round(median, 2) if median is not None else None,
        )

    async def trends_json(self, filters: Filters, days: int) -> bytes:
        last = today()

        async def compute() -> bytes:
            rows = await self.repository.trends(filters, last - timedelta(days=days - 1), last)
            return TRENDS.dump_json(
                [TrendDay(date=day, created=created, completed=done) for day, created, done in rows]
            )

        return await self._cached(f"trends:{last}:{days}:{filters.key()}", compute)

    async def burnup_json(self, filters: Filters, days: int) -> bytes:
        last = today()

        async def compute() -> bytes:
            rows = await self.repository.burnup(filters, last - timedelta(days=days - 1), last)
            return BURNUP.dump_json(
                [BurnupDay(date=day, scope=scope, done=done) for day, scope, done in rows]
            )

        return await self._cached(f"burnup:{last}:{days}:{filters.key()}", compute)

    async def cycle_time_json(self, filters: Filters) -> bytes:
        async def compute() -> bytes:
            durations = await self.repository.completed_durations(filters)
            spent = {
                status: StatusTime(total_hours=round(hours, 2), mean_hours=round(hours / tasks, 2))
                for status, hours, tasks in await self.repository.hours_in_status(filters)
                if status in STATUSES and status != "completed"
            }
            answer = CycleTime(
                lead_time_hours=self._percentiles(durations.count, durations.lead),
                cycle_time_hours=self._percentiles(durations.count, durations.cycle),
                time_in_status=spent,
            )
            return answer.model_dump_json().encode()

        return await self._cached(f"cycle-time:{filters.key()}", compute)

    @staticmethod
    def _percentiles(count: int, values: list[float] | None) -> Percentiles:
        rounded = [round(value, 2) for value in values] if values else [None] * len(PERCENTILES)
        return Percentiles(
            count=count, **dict(zip(("p50", "p75", "p90", "p95"), rounded, strict=True))
        )
