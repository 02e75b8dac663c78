"""The overdue clock: one call of tasks' sweep per interval across replicas; an overdue task
becomes a notice (and an email) through the task.overdue event the sweep writes."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from notifier.repository import ClockRepository

from .conftest import SCAN_INTERVAL, MailSink, create_task, eventually, rows, wait_notices


async def test_the_clock_calls_the_sweep_and_an_overdue_notice_appears(
    app: FastAPI, tasks: httpx.AsyncClient, mail_sink: MailSink, alice, bob
) -> None:
    # Due soon, yet late enough that a slow machine's create still finds it in the future.
    due = datetime.now(UTC) + timedelta(seconds=3)
    task = await create_task(
        tasks, alice[1], title="Due any second", due_date=due.isoformat(), assigned_to=bob[0]["id"]
    )
    assert task["status"] == "todo"
    notices = await wait_notices(app, bob, 2)  # assigned, then overdue after the next sweep
    assert [n["type"] for n in notices] == ["task_assigned", "task_overdue"]
    response = await tasks.get(f"/api/tasks/{task['id']}", headers=alice[1])
    assert response.json()["status"] == "overdue"

    async def emailed() -> bool:
        subjects = [m["Subject"] for m in mail_sink.to(bob[0]["email"])]
        return "[TaskHub] Task overdue" in subjects

    await eventually(emailed, "the overdue email arrives")


async def test_one_turn_per_interval_across_replicas(app: FastAPI) -> None:
    name = f"test-{uuid.uuid4()}"
    interval = timedelta(seconds=60)

    async def try_turn() -> bool:
        async with app.state.database.sessionmaker() as session, session.begin():
            return await ClockRepository(session).take_turn(name, interval)

    turns = await asyncio.gather(*(try_turn() for _ in range(5)))
    assert sorted(turns) == [False, False, False, False, True]
    assert await try_turn() is False
    # The interval has passed: the next caller runs.
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE clock_leases SET ran_at = now() - interval '61 seconds' WHERE name = :n"),
            {"n": name},
        )
    assert await try_turn() is True


async def test_the_sweep_runs_again_after_an_interval(app: FastAPI) -> None:
    (before,) = await rows(app, "SELECT ran_at FROM clock_leases WHERE name = 'overdue-sweep'")

    async def ran_again() -> bool:
        (now,) = await rows(app, "SELECT ran_at FROM clock_leases WHERE name = 'overdue-sweep'")
        return now["ran_at"] > before["ran_at"]

    await eventually(ran_again, "the clock ticks again", timeout=SCAN_INTERVAL * 10)
