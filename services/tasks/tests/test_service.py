"""The use cases' rules: one outbox event per write, bulk create all or nothing."""

import json
import uuid

import httpx
import pytest
from fastapi import FastAPI

from taskhub_common.testing import create_task, parse_time, word

from .conftest import at, check_envelope, count_rows, events_of, wait_all_sent


async def test_create_writes_one_task_created_event(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    creator, headers = await make_user()
    assignee, _ = await make_user()
    task = await create_task(
        client, headers, assigned_to=assignee["id"], tags=[word()], due_date=at(3)
    )
    (event,) = await wait_all_sent(app, task["id"])
    check_envelope(event, "task.created", creator["id"], task["id"])
    assert event["data"] == {k: v for k, v in task.items() if k not in ("files", "comments")}
    assert "changes" not in event["data"]


async def test_each_update_writes_one_event_of_the_most_telling_type(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    creator, headers = await make_user()
    assignee, assignee_headers = await make_user()
    third, _ = await make_user()
    name = word()
    task = await create_task(client, headers, title="first", tags=[f"a-{name}"])
    url = f"/api/tasks/{task['id']}"
    due = at(3)
    steps = [
        (headers, {"title": "second"}, "task.updated", {"title": "second"}),
        (headers, {"assigned_to": assignee["id"]}, "task.assigned", None),
        (
            assignee_headers,
            {"status": "completed", "priority": "low"},
            "task.completed",
            {"status": "completed", "priority": "low"},
        ),
        (headers, {"status": "todo"}, "task.updated", {"status": "todo"}),
        (
            headers,
            {"status": "completed", "assigned_to": third["id"]},
            "task.completed",
            {"status": "completed", "assigned_to": third["id"]},
        ),
        (headers, {"assigned_to": None}, "task.updated", {"assigned_to": None}),
        (headers, {"due_date": due}, "task.updated", None),
        (headers, {"tags": [f"b-{name}", f"A-{name}"]}, "task.updated", None),
        (headers, {"description": "words", "notify_overdue": False}, "task.updated", None),
    ]
    for caller, body, event_type, changes in steps:
        response = await client.put(url, headers=caller, json=body)
        assert response.status_code == 200, response.text
        events = await events_of(app, task["id"])
        event = events[-1]
        actor = assignee["id"] if caller is assignee_headers else creator["id"]
        check_envelope(event, event_type, actor, task["id"])
        assert event["data"] == {
            **{k: v for k, v in response.json().items() if k not in ("files", "comments")},
            "changes": event["data"]["changes"],
        }
        if changes is not None:
            assert event["data"]["changes"] == changes, body
    events = await events_of(app, task["id"])
    assert [event["type"] for event in events] == ["task.created"] + [s[2] for s in steps]
    changes = [event["data"].get("changes") for event in events]
    assert changes[2] == {"assigned_to": assignee["id"]}
    assert parse_time(changes[7]["due_date"]) == parse_time(due)
    assert changes[8] == {"tags": [f"b-{name}", f"a-{name}"]}
    assert changes[9] == {"description": "words", "notify_overdue": False}
    assert len({event["id"] for event in events}) == len(events)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "same"},
        {"title": "  same  ", "priority": "medium"},
        {"description": None},
        {"due_date": None, "assigned_to": None},
        {"tags": ["KEEP-{tag}"]},
    ],
)
async def test_an_update_that_changes_nothing_writes_no_event(
    app: FastAPI, client: httpx.AsyncClient, user, body
) -> None:
    headers = user[1]
    tag = word()
    task = await create_task(client, headers, title="same", tags=[f"keep-{tag}"])
    body = {
        key: [name.format(tag=tag) for name in value] if key == "tags" else value
        for key, value in body.items()
    }
    response = await client.put(f"/api/tasks/{task['id']}", headers=headers, json=body)
    assert response.status_code == 200
    assert response.json()["title"] == "same"
    assert [t["name"] for t in response.json()["tags"]] == [f"keep-{tag}"]
    assert [event["type"] for event in await events_of(app, task["id"])] == ["task.created"]


async def test_delete_writes_one_task_deleted_event(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    creator, headers = user
    task = await create_task(client, headers)
    assert (await client.delete(f"/api/tasks/{task['id']}", headers=headers)).status_code == 204
    _, deleted = await wait_all_sent(app, task["id"])
    check_envelope(deleted, "task.deleted", creator["id"], task["id"])
    assert deleted["data"]["is_deleted"] is True
    assert deleted["data"]["changes"] == {"is_deleted": True}
    assert deleted["data"]["title"] == task["title"]


async def test_bulk_create_returns_the_tasks_in_order(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    creator, headers = await make_user()
    assignee, _ = await make_user()
    name = word()
    body = {
        "tasks": [
            {"title": f"one {name}", "tags": [f"x-{name}"], "priority": "low"},
            {"title": f"two {name}", "due_date": at(-1), "assigned_to": assignee["id"]},
            {"title": f"three {name}", "tags": [f"X-{name}", f"y-{name}"], "status": "completed"},
        ]
    }
    response = await client.post("/api/tasks/bulk", headers=headers, json=body)
    assert response.status_code == 201, response.text
    tasks = response.json()
    assert [task["title"] for task in tasks] == [item["title"] for item in body["tasks"]]
    assert [[t["name"] for t in task["tags"]] for task in tasks] == [
        [f"x-{name}"],
        [],
        [f"x-{name}", f"y-{name}"],
    ]
    assert [task["status"] for task in tasks] == ["todo", "overdue", "completed"]
    assert tasks[2]["completed_at"] is not None
    assert tasks[1]["assignee"]["id"] == assignee["id"]
    assert all(task["creator"]["id"] == creator["id"] for task in tasks)
    for task in tasks:
        (event,) = await events_of(app, task["id"])
        check_envelope(event, "task.created", creator["id"], task["id"])
        assert event["data"] == {k: v for k, v in task.items() if k not in ("files", "comments")}
        # Built from the rows just written, not read back: the same as a read shows, key order
        # and formats of times included.
        got = await client.get(f"/api/tasks/{task['id']}", headers=headers)
        assert json.dumps(got.json()) == json.dumps(task)


async def test_bulk_create_of_1000_tasks(app: FastAPI, client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    tag = word()
    before = await count_rows(app, "tasks"), await count_rows(app, "outbox")
    response = await client.post(
        "/api/tasks/bulk",
        headers=headers,
        json={"tasks": [{"title": f"bulk {i}", "tags": [tag]} for i in range(1000)]},
    )
    assert response.status_code == 201
    assert [task["title"] for task in response.json()] == [f"bulk {i}" for i in range(1000)]
    assert (await count_rows(app, "tasks"), await count_rows(app, "outbox")) == (
        before[0] + 1000,
        before[1] + 1000,
    )
    listed = await client.get("/api/tasks", headers=headers, params={"tag": tag})
    assert listed.json()["total"] == 1000


async def bulk_refused(app: FastAPI, client, headers, body) -> httpx.Response:
    tables = ("tasks", "outbox", "tags", "task_tags")
    before = [await count_rows(app, table) for table in tables]
    response = await client.post("/api/tasks/bulk", headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert [await count_rows(app, table) for table in tables] == before
    return response


async def test_bulk_create_of_1001_tasks_is_422(app: FastAPI, client, user) -> None:
    body = {"tasks": [{"title": f"too many {i}"} for i in range(1001)]}
    response = await bulk_refused(app, client, user[1], body)
    assert response.json()["detail"][0]["loc"] == ["body", "tasks"]


async def test_bulk_create_of_nothing_is_422(app: FastAPI, client, user) -> None:
    await bulk_refused(app, client, user[1], {"tasks": []})
    await bulk_refused(app, client, user[1], {})


async def test_one_bad_task_refuses_the_whole_bulk(app: FastAPI, client, user) -> None:
    name = word()
    items = [{"title": f"good {i}", "tags": [f"new-{name}"]} for i in range(5)]
    items[3] = {"title": "", "tags": [f"new-{name}"]}
    response = await bulk_refused(app, client, user[1], {"tasks": items})
    assert response.json()["detail"][0]["loc"] == ["body", "tasks", 3, "title"]


async def test_one_unknown_assignee_refuses_the_whole_bulk(app: FastAPI, client, user) -> None:
    """This one passes the schema and is caught by the service: still nothing written."""
    name = word()
    items = [{"title": f"good {i}", "tags": [f"new-{name}"]} for i in range(5)]
    items[4]["assigned_to"] = str(uuid.uuid4())
    response = await bulk_refused(app, client, user[1], {"tasks": items})
    assert response.json()["detail"][0]["loc"] == ["body", "tasks"]
    listed = await client.get("/api/tasks", headers=user[1], params={"tag": f"new-{name}"})
    assert listed.json()["total"] == 0
