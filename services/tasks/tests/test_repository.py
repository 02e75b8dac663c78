"""Listing: paging, sorting, filters, search and keyset cursors."""

import base64
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from taskhub_common.testing import create_task, parse_time, word

from .conftest import at

PRIORITY_RANK = {"low": 0, "medium": 1, "high": 2, "urgent": 3}
STATUS_RANK = {"todo": 0, "in_progress": 1, "completed": 2, "overdue": 3}
NO_DUE_DATE = datetime.max.replace(tzinfo=parse_time(at(0)).tzinfo)

SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "created_at": lambda task: parse_time(task["created_at"]),
    "updated_at": lambda task: parse_time(task["updated_at"]),
    "due_date": lambda task: parse_time(task["due_date"]) if task["due_date"] else NO_DUE_DATE,
    "title": lambda task: task["title"],
    "priority": lambda task: PRIORITY_RANK[task["priority"]],
    "status": lambda task: STATUS_RANK[task["status"]],
}


async def list_tasks(client: httpx.AsyncClient, headers: dict, **params: Any) -> dict:
    response = await client.get("/api/tasks", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict) -> list[str]:
    return [task["id"] for task in page["tasks"]]


@pytest.fixture(scope="module")
async def sortable(client: httpx.AsyncClient, user) -> tuple[str, list[dict]]:
    """Seven tasks under one tag whose every sort field varies (some share a value)."""
    headers = user[1]
    tag = word()
    soon = at(2)  # shared by two tasks: a tie the id breaks
    specs = [
        {"title": "delta", "priority": "high", "status": "completed", "due_date": at(4)},
        {"title": "alpha", "priority": "low", "status": "overdue"},
        {"title": "echo", "priority": "urgent", "status": "todo", "due_date": soon},
        {"title": "charlie", "priority": "medium", "status": "in_progress", "due_date": at(9)},
        {"title": "bravo", "priority": "high", "status": "todo"},
        {"title": "foxtrot", "priority": "low", "status": "in_progress", "due_date": soon},
        {"title": "alpha", "priority": "urgent", "status": "completed", "due_date": at(-1)},
    ]
    tasks = [await create_task(client, headers, tags=[tag], **spec) for spec in specs]
    # Touch two early tasks so updated_at orders differently from created_at.
    for task in (tasks[1], tasks[0]):
        response = await client.put(
            f"/api/tasks/{task['id']}", headers=headers, json={"description": "touched"}
        )
        assert response.status_code == 200
    listed = await list_tasks(client, headers, tag=tag, page_size=100)
    assert listed["total"] == len(specs)
    return tag, listed["tasks"]


def expected_order(tasks: list[dict], sort_by: str, sort_order: str) -> list[str]:
    """Sorted by the field, then by id (the tie-breaker), in the one direction."""
    ordered = sorted(tasks, key=lambda t: (SORT_KEYS[sort_by](t), uuid.UUID(t["id"])))
    if sort_order == "desc":
        ordered.reverse()
    return [task["id"] for task in ordered]


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", list(SORT_KEYS))
async def test_sorting(client: httpx.AsyncClient, user, sortable, sort_by, sort_order) -> None:
    tag, tasks = sortable
    page = await list_tasks(
        client, user[1], tag=tag, sort_by=sort_by, sort_order=sort_order, page_size=100
    )
    assert ids(page) == expected_order(tasks, sort_by, sort_order)
    keys = [SORT_KEYS[sort_by](task) for task in page["tasks"]]
    assert keys == sorted(keys, reverse=sort_order == "desc")


async def test_sort_orders_follow_rank_not_spelling(client: httpx.AsyncClient, user, sortable):
    tag, _ = sortable
    by_priority = await list_tasks(client, user[1], tag=tag, sort_by="priority", sort_order="asc")
    assert list(dict.fromkeys(t["priority"] for t in by_priority["tasks"])) == [
        "low",
        "medium",
        "high",
        "urgent",
    ]
    by_status = await list_tasks(client, user[1], tag=tag, sort_by="status", sort_order="asc")
    assert list(dict.fromkeys(t["status"] for t in by_status["tasks"])) == [
        "todo",
        "in_progress",
        "completed",
        "overdue",
    ]
    by_due = await list_tasks(client, user[1], tag=tag, sort_by="due_date", sort_order="asc")
    due_dates = [t["due_date"] for t in by_due["tasks"]]
    assert due_dates[-2:] == [None, None] and None not in due_dates[:-2]


async def test_default_sort_is_newest_first(client: httpx.AsyncClient, user, sortable) -> None:
    tag, tasks = sortable
    page = await list_tasks(client, user[1], tag=tag)
    assert ids(page) == expected_order(tasks, "created_at", "desc")
    assert page["page"] == 1 and page["page_size"] == 10


@pytest.mark.parametrize("sort_order", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", list(SORT_KEYS))
async def test_keyset_paging_visits_every_row_once(
    client: httpx.AsyncClient, user, sortable, sort_by, sort_order
) -> None:
    tag, tasks = sortable
    query = {"tag": tag, "sort_by": sort_by, "sort_order": sort_order, "page_size": 2}
    page = await list_tasks(client, user[1], **query)
    seen = ids(page)
    pages = 1
    while page["next_cursor"]:
        page = await list_tasks(client, user[1], **query, cursor=page["next_cursor"])
        assert page["total"] == len(tasks)
        assert 1 <= len(page["tasks"]) <= 2
        seen += ids(page)
        pages += 1
    assert seen == expected_order(tasks, sort_by, sort_order)
    assert pages == 4


async def test_keyset_paging_is_stable_while_rows_are_added(
    client: httpx.AsyncClient, user
) -> None:
    headers = user[1]
    tag = word()
    first = [await create_task(client, headers, tags=[tag]) for _ in range(4)]
    page = await list_tasks(client, headers, tag=tag, page_size=2)
    seen = ids(page)
    newer = await create_task(client, headers, tags=[tag])
    while page["next_cursor"]:
        page = await list_tasks(client, headers, tag=tag, page_size=2, cursor=page["next_cursor"])
        seen += ids(page)
    assert seen == [task["id"] for task in reversed(first)]
    assert newer["id"] not in seen


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort_by", "cursor"),
    [
        ("created_at", "not a cursor!"),
        ("created_at", "%%%%"),
        ("created_at", base64.urlsafe_b64encode(b"\xff\xfe").decode()),
        ("created_at", cursor_of("just a string")),
        ("created_at", cursor_of(5)),
        ("created_at", cursor_of([])),
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", "not-a-uuid"])),
        ("created_at", cursor_of(["yesterday", str(uuid.uuid4())])),
        ("created_at", cursor_of([5, str(uuid.uuid4())])),
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", str(uuid.uuid4()), 1])),
        ("priority", cursor_of(["critical", str(uuid.uuid4())])),
        ("status", cursor_of(["done", str(uuid.uuid4())])),
        ("title", cursor_of([5, str(uuid.uuid4())])),
        ("title", cursor_of([None, str(uuid.uuid4())])),
        ("due_date", cursor_of([None, str(uuid.uuid4())])),
        ("title", "x" * 501),
        # A non-string id was a 500 (and a reset connection).
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", 5])),
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", None])),
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", ["x"]])),
        ("created_at", cursor_of(["2024-01-01T00:00:00+00:00", {"a": 1}])),
        ("created_at", cursor_of({"a": 1, "b": 2})),
        ("created_at", cursor_of("ab")),
        ("created_at", cursor_of(["2024-01-01T00:00:00", str(uuid.uuid4())])),
        ("created_at", cursor_of(["99999-01-01T00:00:00+00:00", str(uuid.uuid4())])),
        ("title", cursor_of(["a\u0000b", str(uuid.uuid4())])),
        ("created_at", "=" * 8),
        ("created_at", cursor_of("x" * 300)),
    ],
)
async def test_a_tampered_cursor_is_422(client: httpx.AsyncClient, user, sort_by, cursor) -> None:
    response = await client.get(
        "/api/tasks", headers=user[1], params={"sort_by": sort_by, "cursor": cursor}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("page", str(10**19)), ("page", "9223372036854775807"), ("page", "0"), ("page", "1e3")],
)
async def test_a_page_out_of_range_is_422(client: httpx.AsyncClient, user, name, value) -> None:
    """A page whose offset overflowed bigint was refused by the database, naming no field."""
    response = await client.get("/api/tasks", headers=user[1], params={name: value})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", name]


async def test_page_and_page_size(client: httpx.AsyncClient, user) -> None:
    headers = user[1]
    tag = word()
    response = await client.post(
        "/api/tasks/bulk",
        headers=headers,
        json={"tasks": [{"title": f"t{i}", "tags": [tag]} for i in range(7)]},
    )
    assert response.status_code == 201
    everything = ids(await list_tasks(client, headers, tag=tag, page_size=100))
    assert len(everything) == 7

    pages = [await list_tasks(client, headers, tag=tag, page_size=3, page=n) for n in (1, 2, 3)]
    assert [len(page["tasks"]) for page in pages] == [3, 3, 1]
    assert [task for page in pages for task in ids(page)] == everything
    for number, page in enumerate(pages, start=1):
        assert (page["total"], page["page"], page["page_size"], page["total_pages"]) == (
            7,
            number,
            3,
            3,
        )
    assert pages[0]["next_cursor"] and pages[1]["next_cursor"]
    assert pages[2]["next_cursor"] is None

    beyond = await list_tasks(client, headers, tag=tag, page_size=3, page=4)
    assert beyond["tasks"] == [] and beyond["total"] == 7 and beyond["total_pages"] == 3
    far = await list_tasks(client, headers, tag=tag, page=1000)
    assert far["tasks"] == [] and far["total"] == 7 and far["total_pages"] == 1

    exact = await list_tasks(client, headers, tag=tag, page_size=7)
    assert exact["total_pages"] == 1 and exact["next_cursor"] is None
    single = await list_tasks(client, headers, tag=tag, page_size=1)
    assert single["total_pages"] == 7 and len(single["tasks"]) == 1
    empty = await list_tasks(client, headers, tag=word())
    assert empty == {
        "tasks": [],
        "total": 0,
        "page": 1,
        "page_size": 10,
        "total_pages": 0,
        "next_cursor": None,
    }


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 0},
        {"page_size": 101},
        {"page_size": -1},
        {"page_size": "ten"},
        {"page": 0},
        {"page": -3},
        {"sort_by": "assigned_to"},
        {"sort_order": "up"},
        {"status": "done"},
        {"priority": "critical"},
        {"assigned_to": "nobody"},
        {"search": "   "},
        {"search": "x" * 201},
        {"tag": "t" * 51},
    ],
)
async def test_bad_list_query_is_422(client: httpx.AsyncClient, user, params) -> None:
    response = await client.get("/api/tasks", headers=user[1], params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


async def test_page_size_bounds_are_accepted(client: httpx.AsyncClient, user) -> None:
    for size in (1, 100):
        assert (await list_tasks(client, user[1], page_size=size))["page_size"] == size


async def test_filters_and_their_combinations(client: httpx.AsyncClient, make_user) -> None:
    _, headers = await make_user()
    assignee, _ = await make_user()
    tag, other_tag = word(), word()
    specs = [
        {"status": "todo", "priority": "high", "assigned_to": assignee["id"]},
        {"status": "todo", "priority": "low"},
        {"status": "completed", "priority": "high", "assigned_to": assignee["id"]},
        {"status": "completed", "priority": "high", "tags": [tag, other_tag]},
        {"status": "in_progress", "priority": "urgent", "assigned_to": assignee["id"]},
    ]
    tasks = [await create_task(client, headers, **{"tags": [tag], **spec}) for spec in specs]
    outside = await create_task(client, headers, status="todo", assigned_to=assignee["id"])

    def expect(**criteria: str) -> set[str]:
        return {
            task["id"]
            for task in tasks
            if all(task[field] == value for field, value in criteria.items())
        }

    async def found(**params: str) -> set[str]:
        page = await list_tasks(client, headers, tag=tag, page_size=100, **params)
        assert page["total"] == len(page["tasks"])
        return set(ids(page))

    assert await found() == expect()
    assert await found(status="todo") == expect(status="todo") != set()
    assert await found(status="completed") == expect(status="completed")
    assert await found(status="overdue") == set()
    assert await found(priority="high") == expect(priority="high")
    assert await found(assigned_to=assignee["id"]) == expect(assigned_to=assignee["id"])
    assert await found(status="completed", priority="high") == expect(
        status="completed", priority="high"
    )
    assert await found(status="todo", assigned_to=assignee["id"]) == {tasks[0]["id"]}
    assert await found(status="completed", priority="high", assigned_to=assignee["id"]) == {
        tasks[2]["id"]
    }
    assert await found(priority="low", assigned_to=assignee["id"]) == set()
    assert await found(assigned_to=str(uuid.uuid4())) == set()
    both_tags = await list_tasks(client, headers, tag=other_tag.upper(), status="completed")
    assert ids(both_tags) == [tasks[3]["id"]]
    # Without the tag filter the assignee's task outside the tag shows too.
    by_assignee = await list_tasks(client, headers, assigned_to=assignee["id"], page_size=100)
    assert set(ids(by_assignee)) == expect(assigned_to=assignee["id"]) | {outside["id"]}


async def test_search_is_case_insensitive_on_title_and_description(
    client: httpx.AsyncClient, user
) -> None:
    headers = user[1]
    term = word()
    in_title = await create_task(client, headers, title=f"Fix the {term.upper()} bug")
    in_description = await create_task(
        client, headers, title="Something else", description=f"see {term} in the logs"
    )
    await create_task(client, headers, title=f"{term[:-1]} almost", description=term[1:])
    for query in (term, term.upper(), term.capitalize(), f"  {term}  "):
        page = await list_tasks(client, headers, search=query)
        assert set(ids(page)) == {in_title["id"], in_description["id"]}, query
        assert page["total"] == 2
    combined = await list_tasks(client, headers, search=term, status="todo", priority="medium")
    assert combined["total"] == 2
    assert (await list_tasks(client, headers, search=term, priority="low"))["total"] == 0


@pytest.mark.parametrize(
    ("literal", "lookalike"),
    [("100%", "1000"), ("a_b", "axb"), ("50%_off", "50xyoff"), ("c\\d", "cd"), ("%", "x")],
)
async def test_search_treats_wildcards_literally(
    client: httpx.AsyncClient, user, literal, lookalike
) -> None:
    headers = user[1]
    term = word()
    wanted = await create_task(client, headers, title=f"{term} {literal} end")
    await create_task(client, headers, title=f"{term} {lookalike} end")
    page = await list_tasks(client, headers, search=f"{term} {literal}")
    assert ids(page) == [wanted["id"]]
