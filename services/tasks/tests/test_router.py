"""The tasks endpoints: shapes, validation, authorization, soft delete."""

import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_common.testing import create_task, parse_time, word

from .conftest import at, count_rows, events_of

TASK_FIELDS = {
    "id",
    "title",
    "description",
    "status",
    "priority",
    "start_date",
    "due_date",
    "completed_at",
    "notify_overdue",
    "is_deleted",
    "created_by",
    "assigned_to",
    "creator",
    "assignee",
    "tags",
    "files",
    "comments",
    "created_at",
    "updated_at",
}


def public_user(user: dict) -> dict:
    """A user as another service shows them: identity's fields, the email hidden."""
    return {**user, "email": None}


async def test_create_returns_the_whole_task(client: httpx.AsyncClient, make_user) -> None:
    creator, headers = await make_user()
    assignee, _ = await make_user()
    tag = word()
    start, due = at(1), at(2)
    response = await client.post(
        "/api/tasks",
        headers=headers,
        json={
            "title": "  Write the report  ",
            "description": "Quarterly numbers",
            "priority": "high",
            "start_date": start,
            "due_date": due,
            "assigned_to": assignee["id"],
            "tags": [f"Beta-{tag}", f"alpha-{tag}"],
            "notify_overdue": False,
        },
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == TASK_FIELDS
    uuid.UUID(task["id"])
    assert task["title"] == "Write the report"
    assert task["description"] == "Quarterly numbers"
    assert task["status"] == "todo"
    assert task["priority"] == "high"
    assert parse_time(task["start_date"]) == parse_time(start)
    assert parse_time(task["due_date"]) == parse_time(due)
    assert parse_time(task["due_date"]).utcoffset().total_seconds() == 0
    assert task["completed_at"] is None
    assert task["notify_overdue"] is False
    assert task["is_deleted"] is False
    assert task["created_by"] == creator["id"]
    assert task["assigned_to"] == assignee["id"]
    assert task["creator"] == public_user(creator)
    assert task["assignee"] == public_user(assignee)
    assert [t["name"] for t in task["tags"]] == [f"Beta-{tag}", f"alpha-{tag}"]
    for tag_out in task["tags"]:
        assert set(tag_out) == {"id", "name", "color", "created_at"}
        uuid.UUID(tag_out["id"])
        assert len(tag_out["color"]) == 7 and tag_out["color"].startswith("#")
        int(tag_out["color"][1:], 16)
        parse_time(tag_out["created_at"])
    assert task["files"] == [] and task["comments"] == []
    assert parse_time(task["created_at"]) == parse_time(task["updated_at"])


async def test_create_with_only_a_title_takes_the_defaults(client: httpx.AsyncClient, user) -> None:
    creator, headers = user
    task = await create_task(client, headers, title="Just a title")
    assert task["status"] == "todo"
    assert task["priority"] == "medium"
    assert task["description"] is None
    assert task["start_date"] is task["due_date"] is None
    assert task["assigned_to"] is None and task["assignee"] is None
    assert task["notify_overdue"] is True
    assert task["tags"] == []
    assert task["creator"]["id"] == creator["id"]


async def test_a_user_not_yet_in_the_directory_can_create(
    client: httpx.AsyncClient, make_user
) -> None:
    """The user.registered event may still be on its way: the caller is asked of identity."""
    creator, headers = await make_user(in_directory=False)
    task = await create_task(client, headers)
    assert task["creator"] == public_user(creator)


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ({}, "todo"),
        ({"due_date": at(-1)}, "overdue"),
        ({"start_date": at(-2), "due_date": at(-1)}, "overdue"),
        ({"start_date": at(-1)}, "in_progress"),
        ({"start_date": at(-1), "due_date": at(3)}, "in_progress"),
        ({"start_date": at(1), "due_date": at(3)}, "todo"),
        ({"due_date": at(3)}, "todo"),
    ],
)
async def test_status_is_derived_from_the_dates(
    client: httpx.AsyncClient, user, dates, expected
) -> None:
    task = await create_task(client, user[1], **dates)
    assert task["status"] == expected
    assert task["completed_at"] is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "todo", "due_date": at(-1)}, "todo"),
        ({"status": "in_progress", "start_date": at(1)}, "in_progress"),
        ({"status": "overdue"}, "overdue"),
        ({"status": "completed", "due_date": at(-1)}, "completed"),
    ],
)
async def test_an_explicit_status_wins(client: httpx.AsyncClient, user, body, expected) -> None:
    task = await create_task(client, user[1], **body)
    assert task["status"] == expected
    assert (task["completed_at"] is not None) == (expected == "completed")


async def test_completed_at_is_set_on_completion_and_cleared_on_reopening(
    client: httpx.AsyncClient, user
) -> None:
    headers = user[1]
    task = await create_task(client, headers)
    url = f"/api/tasks/{task['id']}"
    done = await client.put(url, headers=headers, json={"status": "completed"})
    assert done.status_code == 200
    completed_at = done.json()["completed_at"]
    assert completed_at is not None
    assert parse_time(completed_at) >= parse_time(task["created_at"])
    # Touching something else keeps the completion time.
    renamed = await client.put(url, headers=headers, json={"title": "renamed"})
    assert renamed.json()["completed_at"] == completed_at
    reopened = await client.put(url, headers=headers, json={"status": "in_progress"})
    assert reopened.json()["status"] == "in_progress"
    assert reopened.json()["completed_at"] is None
    assert (await client.get(url, headers=headers)).json()["completed_at"] is None


async def test_moving_the_dates_derives_the_status_again(client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    task = await create_task(client, headers, due_date=at(-1))
    assert task["status"] == "overdue"
    url = f"/api/tasks/{task['id']}"
    moved = await client.put(url, headers=headers, json={"due_date": at(5)})
    assert moved.json()["status"] == "todo"
    done = await client.put(url, headers=headers, json={"status": "completed"})
    assert done.json()["status"] == "completed"
    # A completed task stays completed when its dates move.
    moved_again = await client.put(url, headers=headers, json={"due_date": at(-3)})
    assert moved_again.json()["status"] == "completed"


async def test_tags_are_case_insensitive_and_created_on_first_use(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    headers = user[1]
    name = word()
    tags_before = await count_rows(app, "tags")
    first = await create_task(client, headers, tags=[f"Urgent-{name}"])
    assert await count_rows(app, "tags") == tags_before + 1
    second = await create_task(
        client, headers, tags=[f"URGENT-{name}", f"  urgent-{name} ", f"other-{name}"]
    )
    assert await count_rows(app, "tags") == tags_before + 2
    (tag,) = first["tags"]
    assert tag["name"] == f"Urgent-{name}"
    assert [t["name"] for t in second["tags"]] == [f"Urgent-{name}", f"other-{name}"]
    assert second["tags"][0] == tag
    listed = await client.get("/api/tasks", headers=headers, params={"tag": f"uRgEnT-{name}"})
    assert {t["id"] for t in listed.json()["tasks"]} == {first["id"], second["id"]}


async def test_tags_can_be_replaced_and_cleared(client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    name = word()
    task = await create_task(client, headers, tags=[f"a-{name}", f"b-{name}"])
    url = f"/api/tasks/{task['id']}"
    replaced = await client.put(url, headers=headers, json={"tags": [f"c-{name}", f"A-{name}"]})
    assert [t["name"] for t in replaced.json()["tags"]] == [f"a-{name}", f"c-{name}"]
    kept = await client.put(url, headers=headers, json={"title": "no tag change"})
    assert [t["name"] for t in kept.json()["tags"]] == [f"a-{name}", f"c-{name}"]
    cleared = await client.put(url, headers=headers, json={"tags": []})
    assert cleared.json()["tags"] == []
    listed = await client.get("/api/tasks", headers=headers, params={"tag": f"b-{name}"})
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 256},
        {"title": None},
        {"title": "x", "status": "done"},
        {"title": "x", "priority": "critical"},
        {"title": "x", "assigned_to": "not-a-uuid"},
        {"title": "x", "start_date": at(2), "due_date": at(1)},
        {"title": "x", "due_date": "tomorrow"},
        {"title": "x", "due_date": "9999-12-31T23:00:00-05:00"},
        {"title": "x", "tags": ["t" * 51]},
        {"title": "x", "tags": [""]},
        {"title": "x", "tags": [f"t{i}" for i in range(21)]},
        {"title": "x", "is_deleted": True},
        {"title": "x", "created_by": str(uuid.uuid4())},
        {"title": "x", "description": "d" * 10_001},
    ],
)
async def test_create_bad_input_is_422_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, user, body
) -> None:
    before = await count_rows(app, "tasks"), await count_rows(app, "outbox")
    response = await client.post("/api/tasks", headers=user[1], json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid"
    assert response.json()["request_id"]
    assert (await count_rows(app, "tasks"), await count_rows(app, "outbox")) == before


async def test_create_with_an_unknown_assignee_is_422(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    before = await count_rows(app, "tasks")
    response = await client.post(
        "/api/tasks", headers=user[1], json={"title": "x", "assigned_to": str(uuid.uuid4())}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "assigned_to"]
    assert await count_rows(app, "tasks") == before


async def test_title_of_255_characters_is_accepted(client: httpx.AsyncClient, user) -> None:
    task = await create_task(client, user[1], title="x" * 255)
    assert task["title"] == "x" * 255


async def test_get_returns_the_task(client: httpx.AsyncClient, make_user) -> None:
    _, headers = await make_user()
    assignee, _ = await make_user()
    task = await create_task(client, headers, assigned_to=assignee["id"], tags=[word()])
    response = await client.get(f"/api/tasks/{task['id']}", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == task


async def test_unknown_task_is_404(client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    url = f"/api/tasks/{uuid.uuid4()}"
    for response in (
        await client.get(url, headers=headers),
        await client.put(url, headers=headers, json={"title": "x"}),
        await client.delete(url, headers=headers),
        await client.post(f"{url}/notify-overdue", headers=headers),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        assert response.json()["detail"] == "Task not found"


async def test_a_bad_task_id_is_422(client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    url = "/api/tasks/not-a-uuid"
    for response in (
        await client.get(url, headers=headers),
        await client.put(url, headers=headers, json={"title": "x"}),
        await client.delete(url, headers=headers),
        await client.post(f"{url}/notify-overdue", headers=headers),
    ):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "task_id"]


async def test_update_is_partial_and_null_clears(client: httpx.AsyncClient, make_user) -> None:
    _, headers = await make_user()
    assignee, _ = await make_user()
    tag = word()
    task = await create_task(
        client,
        headers,
        title="Original",
        description="Some words",
        priority="urgent",
        start_date=at(1),
        due_date=at(2),
        assigned_to=assignee["id"],
        tags=[tag],
    )
    url = f"/api/tasks/{task['id']}"
    renamed = await client.put(url, headers=headers, json={"title": "Renamed"})
    assert renamed.status_code == 200
    kept = {k: v for k, v in renamed.json().items() if k not in ("title", "updated_at")}
    assert kept == {k: v for k, v in task.items() if k not in ("title", "updated_at")}
    assert renamed.json()["title"] == "Renamed"
    assert parse_time(renamed.json()["updated_at"]) > parse_time(task["updated_at"])

    cleared = await client.put(
        url, headers=headers, json={"description": None, "due_date": None, "assigned_to": None}
    )
    assert cleared.status_code == 200
    body = cleared.json()
    assert body["description"] is None
    assert body["due_date"] is None
    assert body["assigned_to"] is None and body["assignee"] is None
    assert body["title"] == "Renamed"
    assert body["priority"] == "urgent"
    assert body["start_date"] == task["start_date"]
    assert [t["name"] for t in body["tags"]] == [tag]
    assert (await client.get(url, headers=headers)).json() == body


@pytest.mark.parametrize(
    "body",
    [
        {"title": None},
        {"status": None},
        {"priority": None},
        {"notify_overdue": None},
        {"title": ""},
        {"title": "x" * 256},
        {"status": "done"},
        {"priority": "critical"},
        {"due_date": "not a date"},
        {"start_date": at(10)},  # after the task's due date
        {"start_date": at(5), "due_date": at(4)},
        {"tags": ["x" * 51]},
        {"created_by": str(uuid.uuid4())},
        {"assigned_to": str(uuid.uuid4()), "title": "changed too"},
    ],
)
async def test_update_bad_input_is_422_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, user, body
) -> None:
    headers = user[1]
    task = await create_task(client, headers, description="keep", due_date=at(3))
    url = f"/api/tasks/{task['id']}"
    response = await client.put(url, headers=headers, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid"
    assert (await client.get(url, headers=headers)).json() == task
    assert [event["type"] for event in await events_of(app, task["id"])] == ["task.created"]


async def test_another_user_reads_but_may_not_change_or_delete(
    app: FastAPI, client: httpx.AsyncClient, make_user
) -> None:
    _, owner = await make_user()
    _, stranger = await make_user()
    task = await create_task(client, owner, title="Mine", due_date=at(-1))
    url = f"/api/tasks/{task['id']}"
    assert (await client.get(url, headers=stranger)).json() == task
    listed = await client.get("/api/tasks", headers=stranger, params={"search": task["title"]})
    assert listed.status_code == 200
    update = await client.put(url, headers=stranger, json={"title": "Theirs"})
    assert update.status_code == 403
    assert update.json()["code"] == "forbidden"
    assert (await client.delete(url, headers=stranger)).status_code == 403
    assert (await client.post(f"{url}/notify-overdue", headers=stranger)).status_code == 403
    assert (await client.get(url, headers=owner)).json() == task
    assert [event["type"] for event in await events_of(app, task["id"])] == ["task.created"]


async def test_the_assignee_may_update_but_not_delete(client: httpx.AsyncClient, make_user) -> None:
    _, owner = await make_user()
    assignee, assignee_headers = await make_user()
    task = await create_task(client, owner, assigned_to=assignee["id"])
    url = f"/api/tasks/{task['id']}"
    update = await client.put(url, headers=assignee_headers, json={"status": "in_progress"})
    assert update.status_code == 200
    assert update.json()["status"] == "in_progress"
    assert (await client.delete(url, headers=assignee_headers)).status_code == 403
    assert (await client.get(url, headers=owner)).status_code == 200
    # Handing the task on: the former assignee loses the right to change it.
    other, _ = await make_user()
    moved = await client.put(url, headers=assignee_headers, json={"assigned_to": other["id"]})
    assert moved.status_code == 200
    refused = await client.put(url, headers=assignee_headers, json={"title": "again"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic eDp5"}]
)
async def test_every_endpoint_refuses_an_anonymous_caller(
    client: httpx.AsyncClient, user, headers
) -> None:
    task = await create_task(client, user[1])
    url = f"/api/tasks/{task['id']}"
    responses = [
        await client.post("/api/tasks", headers=headers, json={"title": "x"}),
        await client.post("/api/tasks/bulk", headers=headers, json={"tasks": [{"title": "x"}]}),
        await client.get("/api/tasks", headers=headers),
        await client.get(url, headers=headers),
        await client.put(url, headers=headers, json={"title": "x"}),
        await client.delete(url, headers=headers),
        await client.post(f"{url}/notify-overdue", headers=headers),
    ]
    for response in responses:
        assert response.status_code == 401, response.request.url
        assert response.json()["code"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.get(url, headers=user[1])).json() == task


async def test_soft_delete(app: FastAPI, client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    name = word()
    task = await create_task(client, headers, title=f"doomed {name}", due_date=at(-1))
    url = f"/api/tasks/{task['id']}"
    listed = await client.get("/api/tasks", headers=headers, params={"search": name})
    assert listed.json()["total"] == 1
    deleted = await client.delete(url, headers=headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(url, headers=headers)).status_code == 404
    assert (await client.put(url, headers=headers, json={"title": "x"})).status_code == 404
    assert (await client.delete(url, headers=headers)).status_code == 404
    assert (await client.post(f"{url}/notify-overdue", headers=headers)).status_code == 404
    listed = (await client.get("/api/tasks", headers=headers, params={"search": name})).json()
    assert listed["tasks"] == [] and listed["total"] == 0
    async with app.state.database.sessionmaker() as session:
        still_there = await session.scalar(
            text("SELECT is_deleted FROM tasks WHERE id = :id"), {"id": uuid.UUID(task["id"])}
        )
    assert still_there is True


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}


async def test_internal_routes_are_not_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/api/tasks" in paths and "/api/tasks/{task_id}/notify-overdue" in paths
    assert not [path for path in paths if path.startswith("/internal")]
