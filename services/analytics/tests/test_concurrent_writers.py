"""Two writers of the read model at once (the consumer and a rebuild) never deadlock and leave
exact counts.

The consumer's transaction may upsert facts more than once: a batch whose task events are
split by a user event calls the batch handler once per run. Its first upsert holds task_counts
rows (the triggers' keys) until commit; a rebuild page that locks a task of its second upsert,
then needs one of those count rows, would wait for it while it waits for the page: a cycle.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from sqlalchemy import text

from analytics.repository import AnalyticsRepository
from taskhub_common.contracts import TaskData
from taskhub_common.testing import eventually, scalar


def task(owner: uuid.UUID, *, at: datetime, status: str = "todo") -> TaskData:
    return TaskData(
        id=uuid.uuid4(),
        title="concurrent",
        description=None,
        status=status,
        priority="high",
        start_date=None,
        due_date=None,
        completed_at=at if status == "completed" else None,
        notify_overdue=True,
        is_deleted=False,
        created_by=owner,
        assigned_to=None,
        tags=[],
        created_at=at,
        updated_at=at,
    )


async def waiting_for_a_lock(app: FastAPI, backend: int) -> bool:
    wait = await scalar(
        app, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid", pid=backend
    )
    return wait == "Lock"


async def test_a_consumer_batch_of_two_upserts_and_a_rebuild_page_do_not_deadlock(
    app: FastAPI,
) -> None:
    database = app.state.database
    owner = uuid.uuid4()
    now = datetime.now(UTC)
    first, second = task(owner, at=now), task(owner, at=now)
    async with database.sessionmaker.begin() as session:
        await AnalyticsRepository(session).apply([first, second])

    later = now + timedelta(seconds=1)
    # The page the rebuild applies: `second` as the export shows it later, and a new task of
    # the same count key as `first`'s change.
    page = [second.model_copy(update={"updated_at": later}), task(owner, at=now)]
    async with database.sessionmaker() as consumer, database.sessionmaker() as rebuild:
        await consumer.begin()
        # The consumer's first run of task events: `first` moves to in_progress, so the
        # transaction holds the count rows of (todo, today) and (in_progress, today).
        changed = first.model_copy(update={"status": "in_progress", "updated_at": later})
        await AnalyticsRepository(consumer).apply([changed])

        await rebuild.begin()
        rebuild_pid = await rebuild.scalar(text("SELECT pg_backend_pid()"))
        page_applied = asyncio.create_task(AnalyticsRepository(rebuild).apply(page))
        await eventually(
            lambda: waiting_for_a_lock(app, rebuild_pid), "the rebuild page waits for the consumer"
        )
        # The consumer's second run (after a user event) touches a task of the page, with a
        # newer version than the page's.
        done_at = later + timedelta(seconds=1)
        completed = {"status": "completed", "completed_at": done_at, "updated_at": done_at}
        await AnalyticsRepository(consumer).apply([second.model_copy(update=completed)])
        await consumer.commit()
        await page_applied
        await rebuild.commit()

    async with database.sessionmaker() as session:
        counted = dict(
            (
                await session.execute(
                    text(
                        "SELECT status, sum(tasks) FROM task_counts WHERE created_by = :owner"
                        " GROUP BY status HAVING sum(tasks) <> 0"
                    ),
                    {"owner": owner},
                )
            ).all()
        )
        facts = dict(
            (
                await session.execute(
                    text(
                        "SELECT status, count(*) FROM task_facts WHERE created_by = :owner"
                        " GROUP BY status"
                    ),
                    {"owner": owner},
                )
            ).all()
        )
    assert counted == facts == {"in_progress": 1, "completed": 1, "todo": 1}
