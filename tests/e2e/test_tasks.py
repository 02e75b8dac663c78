"""The task API through the gateway, in both modes."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from taskhub_common.testing import create_task
from tests.e2e.accounts import register, wait_until_tasks_knows


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


async def listing(api: httpx.AsyncClient, account: dict, **params) -> dict:
    response = await api.get("/api/tasks", headers=account["headers"], params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_get_update_delete(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(
        api,
        owner["headers"],
        title="Write the report",
        description="*soon*",
        priority="high",
        tags=["Work"],
    )
    assert task["status"] == "todo"
    assert task["creator"]["username"] == owner["user"]["username"]
    assert task["creator"]["email"] is None
    assert [tag["name"] for tag in task["tags"]] == ["Work"]
    assert task["files"] == [] and task["comments"] == []
    fetched = await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])
    assert fetched.json()["title"] == "Write the report"
    updated = await api.put(
        f"/api/tasks/{task['id']}",
        headers=owner["headers"],
        json={"status": "completed", "description": None},
    )
    assert updated.status_code == 200
    assert updated.json()["status"] == "completed"
    assert updated.json()["completed_at"] is not None
    assert updated.json()["description"] is None
    assert (
        await api.delete(f"/api/tasks/{task['id']}", headers=owner["headers"])
    ).status_code == 204
    for method in ("GET", "PUT", "DELETE"):
        response = await api.request(
            method, f"/api/tasks/{task['id']}", headers=owner["headers"], json={"title": "x"}
        )
        assert response.status_code == 404, method
    notify = await api.post(f"/api/tasks/{task['id']}/notify-overdue", headers=owner["headers"])
    assert notify.status_code == 404


async def test_status_follows_the_dates(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    assert (
        await create_task(api, owner["headers"], title="late", due_date=iso(-timedelta(days=1)))
    )["status"] == "overdue"
    assert (
        await create_task(
            api, owner["headers"], title="started", start_date=iso(-timedelta(hours=1))
        )
    )["status"] == "in_progress"
    assert (
        await create_task(api, owner["headers"], title="later", start_date=iso(timedelta(days=1)))
    )["status"] == "todo"


async def test_anonymous_is_401_everywhere(api: httpx.AsyncClient) -> None:
    some_id = uuid.uuid4()
    for method, path in [
        ("POST", "/api/tasks"),
        ("POST", "/api/tasks/bulk"),
        ("GET", "/api/tasks"),
        ("GET", f"/api/tasks/{some_id}"),
        ("PUT", f"/api/tasks/{some_id}"),
        ("DELETE", f"/api/tasks/{some_id}"),
        ("POST", f"/api/tasks/{some_id}/notify-overdue"),
    ]:
        response = await api.request(method, path, json={})
        assert response.status_code == 401, (method, path)


async def test_a_second_user_reads_but_may_not_change(api: httpx.AsyncClient) -> None:
    owner, stranger = await register(api), await register(api)
    task = await create_task(api, owner["headers"], title="mine", due_date=iso(-timedelta(hours=1)))
    url = f"/api/tasks/{task['id']}"
    assert (await api.get(url, headers=stranger["headers"])).status_code == 200
    assert (
        await api.put(url, headers=stranger["headers"], json={"title": "theirs"})
    ).status_code == 403
    assert (await api.delete(url, headers=stranger["headers"])).status_code == 403
    notify = await api.post(f"{url}/notify-overdue", headers=stranger["headers"])
    assert notify.status_code == 403
    assert (await api.get(url, headers=owner["headers"])).json()["title"] == "mine"


async def test_the_assignee_updates_but_does_not_delete(api: httpx.AsyncClient) -> None:
    owner, assignee = await register(api), await register(api)
    await wait_until_tasks_knows(api, owner, assignee["id"])
    task = await create_task(api, owner["headers"], title="shared", assigned_to=assignee["id"])
    assert task["assignee"]["username"] == assignee["user"]["username"]
    url = f"/api/tasks/{task['id']}"
    assert (
        await api.put(url, headers=assignee["headers"], json={"status": "in_progress"})
    ).status_code == 200
    assert (await api.delete(url, headers=assignee["headers"])).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "x" * 256},
        {"title": "ok", "status": "done"},
        {"title": "ok", "priority": "critical"},
        {"title": "ok", "assigned_to": "not-a-uuid"},
        {"title": "ok", "assigned_to": str(uuid.uuid4())},
        {"title": "ok", "due_date": "tomorrow"},
        {"title": "ok", "start_date": "2030-01-02T00:00:00Z", "due_date": "2030-01-01T00:00:00Z"},
        {"title": "ok", "tags": ["x" * 51]},
        {"title": "ok", "unknown_field": 1},
    ],
)
async def test_bad_task_input_is_422(api: httpx.AsyncClient, body: dict) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    body = {key: marker if value == "ok" else value for key, value in body.items()}
    response = await api.post("/api/tasks", headers=owner["headers"], json=body)
    assert response.status_code == 422, response.text
    assert (await listing(api, owner, search=marker))["total"] == 0


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/tasks", {"page": 0}),
        ("/api/tasks", {"page_size": 0}),
        ("/api/tasks", {"page_size": 101}),
        ("/api/tasks", {"status": "nope"}),
        ("/api/tasks", {"priority": "nope"}),
        ("/api/tasks", {"sort_by": "owner"}),
        ("/api/tasks", {"sort_order": "sideways"}),
        ("/api/tasks", {"assigned_to": "not-a-uuid"}),
        ("/api/tasks", {"cursor": "garbage!"}),
        ("/api/tasks/not-a-uuid", {}),
    ],
)
async def test_bad_queries_are_422(api: httpx.AsyncClient, path: str, params: dict) -> None:
    owner = await register(api)
    response = await api.get(path, headers=owner["headers"], params=params)
    assert response.status_code == 422, (path, params, response.text)


async def test_update_rules(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(
        api, owner["headers"], title="t", description="d", due_date=iso(timedelta(days=3))
    )
    url = f"/api/tasks/{task['id']}"
    for body in ({"title": None}, {"status": None}, {"priority": "nope"}, {"title": "x" * 256}):
        assert (await api.put(url, headers=owner["headers"], json=body)).status_code == 422, body
    cleared = await api.put(
        url, headers=owner["headers"], json={"due_date": None, "tags": ["A", "b"]}
    )
    assert cleared.json()["due_date"] is None
    assert sorted(tag["name"] for tag in cleared.json()["tags"]) == ["A", "b"]
    assert cleared.json()["description"] == "d"


async def test_bulk_create_is_all_or_nothing(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    good = [{"title": f"{marker} {i}", "tags": [marker]} for i in range(5)]
    bad = [*good, {"title": ""}]
    refused = await api.post("/api/tasks/bulk", headers=owner["headers"], json={"tasks": bad})
    assert refused.status_code == 422
    assert (await listing(api, owner, tag=marker))["total"] == 0
    unknown_assignee = [*good, {"title": "x", "assigned_to": str(uuid.uuid4())}]
    refused = await api.post(
        "/api/tasks/bulk", headers=owner["headers"], json={"tasks": unknown_assignee}
    )
    assert refused.status_code == 422
    assert (await listing(api, owner, tag=marker))["total"] == 0
    too_many = [{"title": "x"}] * 1001
    assert (
        await api.post("/api/tasks/bulk", headers=owner["headers"], json={"tasks": too_many})
    ).status_code == 422
    created = await api.post("/api/tasks/bulk", headers=owner["headers"], json={"tasks": good})
    assert created.status_code == 201
    assert len(created.json()) == 5
    assert (await listing(api, owner, tag=marker))["total"] == 5


async def test_pagination_edges_and_cursor(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    await api.post(
        "/api/tasks/bulk",
        headers=owner["headers"],
        json={"tasks": [{"title": f"{marker} {i:02}", "tags": [marker]} for i in range(23)]},
    )
    first = await listing(api, owner, tag=marker, page_size=10)
    assert (first["total"], first["total_pages"], len(first["tasks"])) == (23, 3, 10)
    last = await listing(api, owner, tag=marker, page_size=10, page=3)
    assert len(last["tasks"]) == 3
    beyond = await listing(api, owner, tag=marker, page_size=10, page=4)
    assert beyond["tasks"] == [] and beyond["total"] == 23
    seen, cursor = [], None
    while True:
        params = {"tag": marker, "page_size": 7, "sort_by": "title", "sort_order": "asc"}
        page = await listing(api, owner, **params, **({"cursor": cursor} if cursor else {}))
        seen += [task["title"] for task in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(f"{marker} {i:02}" for i in range(23))


SORT_RANK = {
    "priority": ["low", "medium", "high", "urgent"],
    "status": ["todo", "in_progress", "completed", "overdue"],
}


@pytest.mark.parametrize(
    "sort_by", ["created_at", "updated_at", "due_date", "title", "priority", "status"]
)
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
async def test_each_sort_field_both_ways(
    api: httpx.AsyncClient, sort_by: str, sort_order: str
) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    specs = [
        {"title": "b", "priority": "urgent", "status": "todo", "due_date": iso(timedelta(days=2))},
        {
            "title": "a",
            "priority": "low",
            "status": "completed",
            "due_date": iso(timedelta(days=1)),
        },
        {"title": "c", "priority": "medium", "status": "in_progress"},
        {"title": "d", "priority": "high", "status": "overdue", "due_date": iso(timedelta(days=3))},
    ]
    for spec in specs:
        await create_task(api, owner["headers"], tags=[marker], **spec)
    tasks = (await listing(api, owner, tag=marker, sort_by=sort_by, sort_order=sort_order))["tasks"]
    if sort_by in SORT_RANK:
        keys = [SORT_RANK[sort_by].index(task[sort_by]) for task in tasks]
    elif sort_by == "due_date":
        keys = [task["due_date"] or "9999" for task in tasks]
    else:
        keys = [task[sort_by] for task in tasks]
    assert keys == sorted(keys, reverse=sort_order == "desc")
    assert len(tasks) == 4


async def test_filters_and_search(api: httpx.AsyncClient) -> None:
    owner, assignee = await register(api), await register(api)
    await wait_until_tasks_knows(api, owner, assignee["id"])
    marker = uuid.uuid4().hex
    await create_task(
        api, owner["headers"], title=f"{marker} Alpha report", priority="high", tags=[marker]
    )
    await create_task(
        api,
        owner["headers"],
        title="beta",
        description=f"the ALPHA notes of {marker}",
        priority="low",
        tags=[marker],
    )
    await create_task(
        api,
        owner["headers"],
        title=f"{marker} gamma",
        priority="high",
        status="completed",
        assigned_to=assignee["id"],
        tags=[marker, "other"],
    )
    assert (await listing(api, owner, search=f"{marker} alpha"))["total"] == 1
    assert (await listing(api, owner, search=marker))["total"] == 3
    assert (await listing(api, owner, tag=marker.upper(), priority="high"))["total"] == 2
    assert (await listing(api, owner, tag=marker, priority="high", status="completed"))[
        "total"
    ] == 1
    assigned = await listing(api, owner, assigned_to=assignee["id"], tag=marker)
    assert [task["assignee"]["id"] for task in assigned["tasks"]] == [assignee["id"]]
    assert (await listing(api, owner, search=f"{marker}%"))["total"] == 0, "% is literal"
    assert (await listing(api, owner, tag=marker, search="notes"))["total"] == 1


async def test_notify_overdue(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    late = await create_task(api, owner["headers"], title="late", due_date=iso(-timedelta(hours=2)))
    fresh = await create_task(api, owner["headers"], title="fresh", due_date=iso(timedelta(days=2)))
    sent = await api.post(f"/api/tasks/{late['id']}/notify-overdue", headers=owner["headers"])
    assert sent.status_code == 202
    refused = await api.post(f"/api/tasks/{fresh['id']}/notify-overdue", headers=owner["headers"])
    assert refused.status_code == 409


async def test_a_write_is_visible_to_the_next_read(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    task = await create_task(api, owner["headers"], title=marker, tags=[marker])
    assert (await listing(api, owner, tag=marker))["total"] == 1  # cached now
    await api.put(f"/api/tasks/{task['id']}", headers=owner["headers"], json={"title": "renamed"})
    assert (await listing(api, owner, tag=marker))["tasks"][0]["title"] == "renamed"
    fetched = await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])
    assert fetched.json()["title"] == "renamed"
    await create_task(api, owner["headers"], title="second", tags=[marker])
    assert (await listing(api, owner, tag=marker))["total"] == 2


async def test_requests_are_served_with_redis_stopped(api: httpx.AsyncClient, redis_outage) -> None:
    owner = await register(api)
    marker = uuid.uuid4().hex
    task = await create_task(api, owner["headers"], title=marker, tags=[marker])
    await listing(api, owner, tag=marker)
    with redis_outage():
        assert (await listing(api, owner, tag=marker))["total"] == 1
        updated = await api.put(
            f"/api/tasks/{task['id']}", headers=owner["headers"], json={"title": "offline"}
        )
        assert updated.status_code == 200
        assert (await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])).json()[
            "title"
        ] == "offline"
        await create_task(api, owner["headers"], title="also offline", tags=[marker])
        assert (await listing(api, owner, tag=marker))["total"] == 2
    # Redis is back, and the cache must not serve what it held before the outage.
    await asyncio.sleep(0.2)
    assert (await listing(api, owner, tag=marker))["total"] == 2
    assert (await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])).json()[
        "title"
    ] == "offline"


async def test_openapi_holds_the_task_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/tasks",
        "/api/tasks/bulk",
        "/api/tasks/{task_id}",
        "/api/tasks/{task_id}/notify-overdue",
    ):
        assert path in paths, path
    assert not any(path.startswith("/internal") for path in paths)


async def test_trailing_slash_of_the_seed_spa(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    created = await api.post("/api/tasks/", headers=owner["headers"], json={"title": "slash"})
    assert created.status_code == 201
    assert (await api.get("/api/tasks/", headers=owner["headers"])).status_code == 200
