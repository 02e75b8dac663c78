"""Overdue: the notice sent on request and the sweep the notifier calls."""

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_common.internal_auth import service_headers
from taskhub_common.testing import create_task, parse_time

from .conftest import at, check_envelope, events_of, wait_all_sent

SWEEP = "/internal/tasks/overdue-sweep"


def overdue_events(events: list[dict]) -> list[dict]:
    return [event for event in events if event["type"] == "task.overdue"]


async def test_notify_overdue_by_creator_and_assignee(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    creator, headers = await make_user()
    assignee, assignee_headers = await make_user()
    task = await create_task(client, headers, due_date=at(-1), assigned_to=assignee["id"])
    assert task["status"] == "overdue"
    url = f"/api/tasks/{task['id']}/notify-overdue"

    response = await client.post(url, headers=headers)
    assert response.status_code == 202
    assert response.json() == {"detail": "Overdue notice sent", "task_id": task["id"]}
    events = await wait_all_sent(app, task["id"])
    (event,) = overdue_events(events)
    check_envelope(event, "task.overdue", creator["id"], task["id"])
    assert event["data"]["status"] == "overdue"
    assert event["data"]["assigned_to"] == assignee["id"]
    assert event["data"]["title"] == task["title"]

    assert (await client.post(url, headers=assignee_headers)).status_code == 202
    events = overdue_events(await events_of(app, task["id"]))
    assert [event["actor_id"] for event in events] == [creator["id"], assignee["id"]]
    # Sending the notice changes nothing about the task.
    got = await client.get(f"/api/tasks/{task['id']}", headers=headers)
    assert got.json() == task


async def test_notify_overdue_for_a_past_due_task_not_yet_swept(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    task = await create_task(client, user[1], status="in_progress", due_date=at(-1))
    response = await client.post(f"/api/tasks/{task['id']}/notify-overdue", headers=user[1])
    assert response.status_code == 202
    assert len(overdue_events(await events_of(app, task["id"]))) == 1


async def test_notify_overdue_refuses_a_task_that_is_not_overdue(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    headers = user[1]
    for body in (
        {"due_date": at(2)},
        {},
        {"status": "completed", "due_date": at(-1)},
        {"status": "todo", "start_date": at(-2)},
    ):
        task = await create_task(client, headers, **body)
        response = await client.post(f"/api/tasks/{task['id']}/notify-overdue", headers=headers)
        assert response.status_code == 409, body
        assert response.json()["code"] == "conflict"
        assert overdue_events(await events_of(app, task["id"])) == []


async def test_notify_overdue_by_another_user_is_403(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    _, owner = await make_user()
    _, stranger = await make_user()
    task = await create_task(client, owner, due_date=at(-1))
    response = await client.post(f"/api/tasks/{task['id']}/notify-overdue", headers=stranger)
    assert response.status_code == 403
    assert overdue_events(await events_of(app, task["id"])) == []


async def test_the_sweep_requires_the_service_token(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    task = await create_task(client, user[1], status="todo", due_date=at(-1))
    for headers in (
        {},
        user[1],
        service_headers("another-secret"),
        {"Authorization": f"Bearer {service_headers(app.state.settings.SECRET_KEY)}"},
    ):
        response = await client.post(SWEEP, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
    got = await client.get(f"/api/tasks/{task['id']}", headers=user[1])
    assert got.json()["status"] == "todo"
    assert overdue_events(await events_of(app, task["id"])) == []


async def test_the_sweep_marks_past_due_tasks_overdue_once(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    _, headers = await make_user()
    assignee, _ = await make_user()
    todo = await create_task(
        client, headers, status="todo", due_date=at(-1), assigned_to=assignee["id"]
    )
    started = await create_task(client, headers, status="in_progress", due_date=at(-0.01))
    completed = await create_task(client, headers, status="completed", due_date=at(-1))
    future = await create_task(client, headers, status="todo", due_date=at(3))
    undated = await create_task(client, headers, status="in_progress")
    deleted = await create_task(client, headers, status="todo", due_date=at(-1))
    assert (await client.delete(f"/api/tasks/{deleted['id']}", headers=headers)).status_code == 204
    # Read once, so the sweep also has to drop what the cache holds.
    for task in (todo, started):
        cached = await client.get(f"/api/tasks/{task['id']}", headers=headers)
        assert cached.json()["status"] != "overdue"

    token = service_headers(app.state.settings.SECRET_KEY)
    response = await client.post(SWEEP, headers=token)
    assert response.status_code == 200
    assert response.json()["marked_overdue"] >= 2

    for task in (todo, started):
        got = (await client.get(f"/api/tasks/{task['id']}", headers=headers)).json()
        assert got["status"] == "overdue"
        assert parse_time(got["updated_at"]) > parse_time(task["updated_at"])
        (event,) = overdue_events(await wait_all_sent(app, task["id"]))
        check_envelope(event, "task.overdue", None, task["id"])
        assert event["data"]["status"] == "overdue"
        assert event["data"]["title"] == task["title"]
        assert event["data"]["created_by"] == task["created_by"]
        assert event["data"]["assigned_to"] == task["assigned_to"]
        assert parse_time(event["data"]["due_date"]) == parse_time(task["due_date"])
        # The same shape as every other task event: the task as the API shows it.
        assert {key: event["data"][key] for key in ("creator", "assignee", "tags")} == {
            key: got[key] for key in ("creator", "assignee", "tags")
        }
    for task, status in ((completed, "completed"), (future, "todo"), (undated, "in_progress")):
        got = (await client.get(f"/api/tasks/{task['id']}", headers=headers)).json()
        assert got["status"] == status
        assert overdue_events(await events_of(app, task["id"])) == []
    async with app.state.database.sessionmaker() as session:
        status = await session.scalar(
            text("SELECT status FROM tasks WHERE id = :id"), {"id": uuid.UUID(deleted["id"])}
        )
    assert status == "todo"
    assert overdue_events(await events_of(app, deleted["id"])) == []

    again = await client.post(SWEEP, headers=token)
    assert again.status_code == 200
    assert again.json() == {"marked_overdue": 0}
    for task in (todo, started):
        assert len(overdue_events(await events_of(app, task["id"]))) == 1


async def test_a_task_moved_back_in_time_is_swept_again(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    """One event per transition: overdue, rescheduled, overdue again is two."""
    headers = user[1]
    task = await create_task(client, headers, status="todo", due_date=at(-1))
    token = service_headers(app.state.settings.SECRET_KEY)
    await client.post(SWEEP, headers=token)
    url = f"/api/tasks/{task['id']}"
    moved = await client.put(url, headers=headers, json={"status": "todo", "due_date": at(-2)})
    assert moved.json()["status"] == "todo"
    await client.post(SWEEP, headers=token)
    assert (await client.get(url, headers=headers)).json()["status"] == "overdue"
    assert len(overdue_events(await events_of(app, task["id"]))) == 2
