"""Reminders: set on a live task by any user, theirs alone, delivered once, following the due
date, dropped with the task."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from notifier.repository import ReminderRepository

from .conftest import create_task, eventually, notices_of, rows, wait_handled, wait_notices

REMINDER_FIELDS = {
    "id",
    "task_id",
    "user_id",
    "remind_at",
    "before_due_minutes",
    "created_at",
    "fired_at",
}


def url(task: dict | str, reminder: str | None = None) -> str:
    task_id = task["id"] if isinstance(task, dict) else task
    base = f"/api/tasks/{task_id}/reminders"
    return f"{base}/{reminder}" if reminder else base


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def remind(client: httpx.AsyncClient, user, task: dict, **body) -> dict:
    response = await client.post(url(task), headers=user[1], json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_reminder_fires_once(
    app: FastAPI, client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1], title="Call the bank")
    # Far enough ahead that a slow machine's request still finds it in the future.
    reminder = await remind(client, bob, task, remind_at=soon(2))
    assert set(reminder) == REMINDER_FIELDS
    assert (reminder["user_id"], reminder["task_id"]) == (bob[0]["id"], task["id"])
    assert reminder["fired_at"] is None
    (notice,) = await wait_notices(app, bob, 1)
    assert notice["type"] == "task_reminder"
    assert notice["task_id"] == uuid.UUID(task["id"])
    assert notice["message"] == 'Reminder about "Call the bank".'
    await asyncio.sleep(0.6)  # three more rounds of the reminder clock
    assert len(await notices_of(app, bob)) == 1
    assert await notices_of(app, alice) == [], "a reminder is for its creator only"
    (listed,) = (await client.get(url(task), headers=bob[1])).json()
    assert listed["fired_at"] is not None
    (mail,) = await rows(app, "SELECT * FROM mail_outbox WHERE cause_id = :r", r=notice["cause_id"])
    assert mail["type"] == "task_reminder"


async def test_a_relative_reminder_follows_the_due_date(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice
) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    task = await create_task(tasks, alice[1], due_date=due.isoformat())
    await wait_handled(app, tasks_app, task, "task.created")
    reminder = await remind(client, alice, task, before_due_minutes=90)
    assert datetime.fromisoformat(reminder["remind_at"]) == due - timedelta(minutes=90)
    moved = due + timedelta(days=1)
    response = await tasks.put(
        f"/api/tasks/{task['id']}", headers=alice[1], json={"due_date": moved.isoformat()}
    )
    assert response.status_code == 200
    await wait_handled(app, tasks_app, task, "task.updated")
    (listed,) = (await client.get(url(task), headers=alice[1])).json()
    assert datetime.fromisoformat(listed["remind_at"]) == moved - timedelta(minutes=90)
    assert listed["before_due_minutes"] == 90
    # Without a due date it waits (null) rather than fire.
    await tasks.put(f"/api/tasks/{task['id']}", headers=alice[1], json={"due_date": None})

    async def cleared() -> bool:
        (row,) = (await client.get(url(task), headers=alice[1])).json()
        return row["remind_at"] is None

    await eventually(cleared, "the reminder waits for a due date")


async def test_the_reminders_of_a_batch_of_tasks_follow_their_due_dates_at_once(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice
) -> None:
    """One statement for a run of task events: each task's relative reminders move with its own
    due date; absolute ones stay."""
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    first = await create_task(tasks, alice[1], due_date=due.isoformat())
    second = await create_task(tasks, alice[1], due_date=due.isoformat())
    for task in (first, second):
        await wait_handled(app, tasks_app, task, "task.created")
    relative = await remind(client, alice, first, before_due_minutes=90)
    absolute = await remind(client, alice, first, remind_at=soon(3600))
    waiting = await remind(client, alice, second, before_due_minutes=30)
    moved = due + timedelta(days=1)
    async with app.state.database.sessionmaker.begin() as session:
        await ReminderRepository(session).follow_due_dates(
            {uuid.UUID(first["id"]): moved, uuid.UUID(second["id"]): None}
        )
    shown = {
        reminder["id"]: reminder["remind_at"]
        for task in (first, second)
        for reminder in (await client.get(url(task), headers=alice[1])).json()
    }
    assert datetime.fromisoformat(shown[relative["id"]]) == moved - timedelta(minutes=90)
    assert shown[absolute["id"]] == absolute["remind_at"]
    assert shown[waiting["id"]] is None


async def test_a_relative_reminder_needs_a_due_date(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice
) -> None:
    task = await create_task(tasks, alice[1])
    await wait_handled(app, tasks_app, task, "task.created")
    response = await client.post(url(task), headers=alice[1], json={"before_due_minutes": 10})
    assert response.status_code == 422
    assert (await client.get(url(task), headers=alice[1])).json() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"remind_at": "2030-01-01T10:00:00Z", "before_due_minutes": 5},
        {"remind_at": "2030-01-01T10:00:00"},  # no offset: ambiguous
        {"remind_at": "2001-01-01T10:00:00Z"},  # in the past
        {"before_due_minutes": -1},
        {"before_due_minutes": 10_000_000},
        {"remind_at": "tomorrow"},
        {"remind_at": "2030-01-01T10:00:00Z", "note": "x"},
    ],
)
async def test_bad_reminders_are_422_and_write_nothing(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, body: dict
) -> None:
    task = await create_task(tasks, alice[1])
    response = await client.post(url(task), headers=alice[1], json=body)
    assert response.status_code == 422, response.text
    assert (await client.get(url(task), headers=alice[1])).json() == []


async def test_a_missing_or_deleted_task_is_404(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice
) -> None:
    response = await client.post(
        url(str(uuid.uuid4())), headers=alice[1], json={"remind_at": soon(60)}
    )
    assert response.status_code == 404
    task = await create_task(tasks, alice[1])
    assert (await tasks.delete(f"/api/tasks/{task['id']}", headers=alice[1])).status_code == 204
    response = await client.post(url(task), headers=alice[1], json={"remind_at": soon(60)})
    assert response.status_code == 404
    await wait_handled(app, tasks_app, task, "task.deleted")
    assert (await client.get(url(task), headers=alice[1])).status_code == 404


async def test_another_users_reminder_is_404(client: httpx.AsyncClient, tasks, alice, bob) -> None:
    task = await create_task(tasks, alice[1])
    mine = await remind(client, alice, task, remind_at=soon(3600))
    assert (await client.get(url(task), headers=bob[1])).json() == []
    response = await client.delete(url(task, mine["id"]), headers=bob[1])
    assert response.status_code == 404
    other_task = await create_task(tasks, alice[1])
    response = await client.delete(url(other_task, mine["id"]), headers=alice[1])
    assert response.status_code == 404, "a reminder is found under its own task only"
    assert [r["id"] for r in (await client.get(url(task), headers=alice[1])).json()] == [mine["id"]]
    assert (await client.delete(url(task, mine["id"]), headers=alice[1])).status_code == 204
    assert (await client.get(url(task), headers=alice[1])).json() == []
    assert (await client.delete(url(task, mine["id"]), headers=alice[1])).status_code == 404


async def test_my_reminders_across_tasks(client: httpx.AsyncClient, tasks, alice, bob) -> None:
    first, second = await create_task(tasks, alice[1]), await create_task(tasks, bob[1])
    later = await remind(client, alice, first, remind_at=soon(7200))
    sooner = await remind(client, alice, second, remind_at=soon(3600))
    await remind(client, bob, second, remind_at=soon(60))
    response = await client.get("/api/notifications/reminders", headers=alice[1])
    assert response.status_code == 200
    assert [r["id"] for r in response.json()] == [sooner["id"], later["id"]]


async def test_reminders_of_a_completed_or_deleted_task_are_dropped(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice, bob
) -> None:
    done = await create_task(tasks, alice[1])
    gone = await create_task(tasks, alice[1])
    await remind(client, bob, done, remind_at=soon(3600))
    await remind(client, bob, gone, remind_at=soon(3600))
    await tasks.put(f"/api/tasks/{done['id']}", headers=alice[1], json={"status": "completed"})
    await tasks.delete(f"/api/tasks/{gone['id']}", headers=alice[1])
    await wait_handled(app, tasks_app, done, "task.completed")
    await wait_handled(app, tasks_app, gone, "task.deleted")
    assert (await client.get("/api/notifications/reminders", headers=bob[1])).json() == []


async def test_a_due_reminder_of_a_task_completed_meanwhile_does_not_fire(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice
) -> None:
    task = await create_task(tasks, alice[1])
    await wait_handled(app, tasks_app, task, "task.created")
    reminder = await remind(client, alice, task, remind_at=soon(3600))
    # The task.completed event is late, but the read model already says so when it fires.
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE task_states SET status = 'completed' WHERE task_id = :t"),
            {"t": uuid.UUID(task["id"])},
        )
        await session.execute(
            text("UPDATE reminders SET remind_at = now() WHERE id = :r"),
            {"r": uuid.UUID(reminder["id"])},
        )

    async def dropped() -> bool:
        return not await rows(
            app, "SELECT id FROM reminders WHERE task_id = :t", t=uuid.UUID(task["id"])
        )

    await eventually(dropped, "the reminder is dropped")
    assert await notices_of(app, alice) == []


async def test_too_many_pending_reminders_is_409(client: httpx.AsyncClient, tasks, alice) -> None:
    task = await create_task(tasks, alice[1])
    for _ in range(20):
        await remind(client, alice, task, remind_at=soon(3600))
    response = await client.post(url(task), headers=alice[1], json={"remind_at": soon(3600)})
    assert response.status_code == 409
