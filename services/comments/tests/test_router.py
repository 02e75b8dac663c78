"""The comments endpoints: shapes, validation, authorization, soft delete, paging."""

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from comments.app import create_app
from taskhub_common.http import make_http_client
from taskhub_common.internal_auth import task_seen_claim
from taskhub_common.tasks_client import TasksClient
from taskhub_common.testing import parse_time, scalar, wait_task_deleted

from .conftest import (
    COMMENT_FIELDS,
    comments_settings,
    comments_url,
    create_task,
    delete_task,
    list_comments,
    outbox_size,
    post_comment,
    public_user,
    rows_of_task,
)


async def test_create_returns_the_whole_comment(
    app: FastAPI, client: httpx.AsyncClient, alice, bob, task
) -> None:
    author, headers = bob
    response = await client.post(
        comments_url(task["id"]), headers=headers, json={"content": "Looks **good**"}
    )
    assert response.status_code == 201, response.text
    comment = response.json()
    assert set(comment) == COMMENT_FIELDS
    uuid.UUID(comment["id"])
    assert comment["task_id"] == task["id"]
    assert comment["user_id"] == author["id"]
    assert comment["author"] == public_user(author)
    assert comment["content"] == "Looks **good**"
    assert comment["content_html"] == "<p>Looks <strong>good</strong></p>"
    assert comment["is_deleted"] is False
    created, updated = parse_time(comment["created_at"]), parse_time(comment["updated_at"])
    assert created == updated and created.utcoffset().total_seconds() == 0
    (row,) = await rows_of_task(app, task["id"])
    assert row["id"] == uuid.UUID(comment["id"])
    assert row["content"] == "Looks **good**"


async def test_content_is_kept_as_written(client: httpx.AsyncClient, alice, task) -> None:
    content = "    indented code\n\ntrailing  "
    comment = await post_comment(client, alice[1], task["id"], content)
    assert comment["content"] == content
    assert "<pre><code>indented code" in comment["content_html"]
    longest = await post_comment(client, alice[1], task["id"], "x" * 5000)
    assert len(longest["content"]) == 5000


async def test_a_user_not_yet_in_the_directory_can_comment(
    client: httpx.AsyncClient, make_user, task
) -> None:
    """The user.registered event may still be on its way: the caller is asked of identity."""
    author, headers = await make_user(in_directory=False)
    comment = await post_comment(client, headers, task["id"])
    assert comment["author"] == public_user(author)


async def test_list_returns_a_list_with_the_total_in_a_header(
    client: httpx.AsyncClient, alice, bob, task
) -> None:
    first = await post_comment(client, alice[1], task["id"], "first")
    second = await post_comment(client, bob[1], task["id"], "second")
    response = await client.get(comments_url(task["id"]), headers=bob[1])
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "2"
    assert response.json() == [first, second]
    assert response.json()[1]["author"] == public_user(bob[0])


async def test_list_of_a_task_without_comments_is_empty(
    client: httpx.AsyncClient, bob, task
) -> None:
    assert await list_comments(client, bob[1], task["id"]) == ([], 0)


async def test_list_is_oldest_first_then_by_id(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    created = [await post_comment(client, alice[1], task["id"], f"n{i}") for i in range(4)]
    listed, _ = await list_comments(client, alice[1], task["id"])
    assert [c["id"] for c in listed] == [c["id"] for c in created]
    # Comments made in the same instant are ordered by id.
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE comments SET created_at = '2030-01-01T00:00:00Z' WHERE task_id = :id"),
            {"id": uuid.UUID(task["id"])},
        )
    listed, _ = await list_comments(client, alice[1], task["id"])
    assert [c["id"] for c in listed] == sorted(c["id"] for c in created)


async def test_pagination_edges(client: httpx.AsyncClient, alice, task) -> None:
    created = [await post_comment(client, alice[1], task["id"], f"c{i}") for i in range(7)]
    ids = [c["id"] for c in created]

    async def page(**params) -> tuple[list[str], int]:
        comments, total = await list_comments(client, alice[1], task["id"], **params)
        return [c["id"] for c in comments], total

    assert await page() == (ids, 7), "the default page_size of 50 holds them all"
    assert await page(page_size=3) == (ids[:3], 7)
    assert await page(page_size=3, page=2) == (ids[3:6], 7)
    assert await page(page_size=3, page=3) == (ids[6:], 7)
    assert await page(page_size=3, page=4) == ([], 7)
    assert await page(page_size=1, page=7) == (ids[6:], 7)
    assert await page(page_size=100) == (ids, 7)
    assert await page(page_size=7) == (ids, 7)
    assert await page(page=10**12) == ([], 7), "far past the end is empty, not an error"
    beyond_bigint = await client.get(
        comments_url(task["id"]), headers=alice[1], params={"page": 10**19}
    )
    assert beyond_bigint.status_code == 422
    assert beyond_bigint.json()["detail"][0]["loc"] == ["query", "page"]


async def test_update_by_the_author(client: httpx.AsyncClient, alice, task) -> None:
    comment = await post_comment(client, alice[1], task["id"], "draft")
    response = await client.put(
        comments_url(task["id"], comment["id"]), headers=alice[1], json={"content": "*final*"}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert set(updated) == COMMENT_FIELDS
    assert updated["content"] == "*final*"
    assert updated["content_html"] == "<p><em>final</em></p>"
    assert updated["created_at"] == comment["created_at"]
    assert parse_time(updated["updated_at"]) > parse_time(comment["updated_at"])
    assert {k: updated[k] for k in ("id", "task_id", "user_id", "author", "is_deleted")} == {
        k: comment[k] for k in ("id", "task_id", "user_id", "author", "is_deleted")
    }
    listed, _ = await list_comments(client, alice[1], task["id"])
    assert listed == [updated]


async def test_an_update_that_changes_nothing_keeps_updated_at(
    client: httpx.AsyncClient, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"], "same")
    response = await client.put(
        comments_url(task["id"], comment["id"]), headers=alice[1], json={"content": "same"}
    )
    assert response.status_code == 200
    assert response.json() == comment


async def test_delete_is_soft_and_then_404(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    kept = await post_comment(client, alice[1], task["id"], "kept")
    gone = await post_comment(client, alice[1], task["id"], "gone")
    url = comments_url(task["id"], gone["id"])
    response = await client.delete(url, headers=alice[1])
    assert response.status_code == 204
    assert response.content == b""
    assert await list_comments(client, alice[1], task["id"]) == ([kept], 1)
    put = await client.put(url, headers=alice[1], json={"content": "again"})
    assert put.status_code == 404
    assert put.json()["detail"] == "Comment not found"
    assert (await client.delete(url, headers=alice[1])).status_code == 404
    rows = {row["content"]: row for row in await rows_of_task(app, task["id"])}
    assert rows["gone"]["is_deleted"] is True, "the row stays, flagged"
    assert rows["kept"]["is_deleted"] is False


@pytest.mark.parametrize(
    ("method", "sub"),
    [("POST", False), ("GET", False), ("PUT", True), ("DELETE", True)],
)
async def test_anonymous_is_401(
    app: FastAPI, client: httpx.AsyncClient, alice, task, method: str, sub: bool
) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    url = comments_url(task["id"], comment["id"] if sub else None)
    before = await rows_of_task(app, task["id"]), await outbox_size(app)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        response = await client.request(method, url, headers=headers, json={"content": "x"})
        assert response.status_code == 401, (method, headers)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["code"] == "not_authenticated"
    assert (await rows_of_task(app, task["id"]), await outbox_size(app)) == before


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_another_user_may_not_change_or_delete(
    app: FastAPI, client: httpx.AsyncClient, alice, bob, task, method: str
) -> None:
    """Not even the task's creator: a comment belongs to its author."""
    comment = await post_comment(client, bob[1], task["id"], "bob's")
    url = comments_url(task["id"], comment["id"])
    before = await rows_of_task(app, task["id"]), await outbox_size(app)
    response = await client.request(method, url, headers=alice[1], json={"content": "alice's"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert (await rows_of_task(app, task["id"]), await outbox_size(app)) == before
    assert await list_comments(client, alice[1], task["id"]) == ([comment], 1)


async def test_any_user_reads_and_comments_on_any_task(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, bob, make_user
) -> None:
    """Neither creator nor assignee: a third user still reads and comments."""
    third, third_headers = await make_user()
    task = await create_task(tasks, alice[1], assigned_to=bob[0]["id"])
    comment = await post_comment(client, third_headers, task["id"], "drive-by")
    assert comment["user_id"] == third["id"]
    assert await list_comments(client, bob[1], task["id"]) == ([comment], 1)


async def test_unknown_task_is_404_on_every_route(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    unknown = str(uuid.uuid4())
    before = await outbox_size(app)
    for method, url in [
        ("POST", comments_url(unknown)),
        ("GET", comments_url(unknown)),
        ("PUT", comments_url(unknown, comment["id"])),
        ("DELETE", comments_url(unknown, comment["id"])),
    ]:
        response = await client.request(method, url, headers=alice[1], json={"content": "x"})
        assert response.status_code == 404, (method, url)
        assert response.json()["detail"] == "Task not found"
    assert await rows_of_task(app, unknown) == []
    assert await outbox_size(app) == before
    assert await list_comments(client, alice[1], task["id"]) == ([comment], 1)


async def test_unknown_comment_is_404(client: httpx.AsyncClient, alice, task) -> None:
    for method in ("PUT", "DELETE"):
        response = await client.request(
            method,
            comments_url(task["id"], str(uuid.uuid4())),
            headers=alice[1],
            json={"content": "x"},
        )
        assert response.status_code == 404, method
        assert response.json()["detail"] == "Comment not found"


async def test_a_comment_is_found_only_under_its_own_task(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, task
) -> None:
    other = await create_task(tasks, alice[1])
    comment = await post_comment(client, alice[1], task["id"], "here")
    url = comments_url(other["id"], comment["id"])
    assert (await client.put(url, headers=alice[1], json={"content": "x"})).status_code == 404
    assert (await client.delete(url, headers=alice[1])).status_code == 404
    assert await list_comments(client, alice[1], task["id"]) == ([comment], 1)


async def test_deleted_task_is_404_on_every_route_and_nothing_is_destroyed(
    app: FastAPI, client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, bob, task
) -> None:
    comment = await post_comment(client, bob[1], task["id"], "before the delete")
    await delete_task(tasks, alice[1], task["id"])
    await wait_task_deleted(app, task["id"])
    before = await outbox_size(app)
    for method, url, headers in [
        ("POST", comments_url(task["id"]), alice[1]),
        ("GET", comments_url(task["id"]), alice[1]),
        ("PUT", comments_url(task["id"], comment["id"]), bob[1]),
        ("DELETE", comments_url(task["id"], comment["id"]), bob[1]),
    ]:
        response = await client.request(method, url, headers=headers, json={"content": "x"})
        assert response.status_code == 404, method
        assert response.json()["detail"] == "Task not found"
    (row,) = await rows_of_task(app, task["id"])
    assert row["content"] == "before the delete" and row["is_deleted"] is False
    assert await outbox_size(app) == before


async def test_a_task_deleted_in_tasks_is_404_before_its_event_arrives(
    app: FastAPI, client: httpx.AsyncClient, tasks_app: FastAPI, alice, task
) -> None:
    """Tasks' own answer decides too: a task it no longer serves is gone, whether or not
    task.deleted has been handled here. (Flagged in tasks' table directly, so that no event
    is written at all.)"""
    async with tasks_app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE tasks SET is_deleted = true WHERE id = :id"), {"id": uuid.UUID(task["id"])}
        )
    response = await client.post(comments_url(task["id"]), headers=alice[1], json={"content": "x"})
    assert response.status_code == 404
    listed = await client.get(comments_url(task["id"]), headers=alice[1])
    assert listed.status_code == 404
    assert await rows_of_task(app, task["id"]) == []
    assert (
        await scalar(
            app, "SELECT count(*) FROM deleted_tasks WHERE task_id = :id", id=uuid.UUID(task["id"])
        )
        == 0
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": "   \n\t "},
        {"content": "x" * 5001},
        {"content": None},
        {"content": 42},
        {"content": ["x"]},
        {"text": "wrong field"},
        {"content": "ok", "extra": 1},
    ],
)
async def test_bad_content_is_422_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, alice, task, body: dict
) -> None:
    comment = await post_comment(client, alice[1], task["id"], "original")
    before = await rows_of_task(app, task["id"]), await outbox_size(app)
    for method, url in [
        ("POST", comments_url(task["id"])),
        ("PUT", comments_url(task["id"], comment["id"])),
    ]:
        response = await client.request(method, url, headers=alice[1], json=body)
        assert response.status_code == 422, (method, body, response.text)
        assert response.json()["code"] == "invalid"
        assert isinstance(response.json()["detail"], list)
    assert (await rows_of_task(app, task["id"]), await outbox_size(app)) == before


async def test_a_body_that_is_not_json_is_422(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    response = await client.post(
        comments_url(task["id"]),
        headers={**alice[1], "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 422
    assert await rows_of_task(app, task["id"]) == []


async def test_a_nul_character_is_422_not_500(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    response = await client.post(
        comments_url(task["id"]), headers=alice[1], json={"content": "a\x00b"}
    )
    assert response.status_code == 422
    assert await rows_of_task(app, task["id"]) == []


async def test_bad_ids_are_422(client: httpx.AsyncClient, alice, task) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    for method, url in [
        ("POST", comments_url("not-a-uuid")),
        ("GET", comments_url("not-a-uuid")),
        ("PUT", comments_url("not-a-uuid", comment["id"])),
        ("DELETE", comments_url("not-a-uuid", comment["id"])),
        ("PUT", comments_url(task["id"], "nope")),
        ("DELETE", comments_url(task["id"], "12345")),
    ]:
        response = await client.request(method, url, headers=alice[1], json={"content": "x"})
        assert response.status_code == 422, (method, url)
    assert await list_comments(client, alice[1], task["id"]) == ([comment], 1)


@pytest.mark.parametrize(
    "params",
    [
        {"page": 0},
        {"page": -1},
        {"page": "first"},
        {"page_size": 0},
        {"page_size": 101},
        {"page_size": "all"},
    ],
)
async def test_bad_paging_is_422(client: httpx.AsyncClient, alice, task, params: dict) -> None:
    response = await client.get(comments_url(task["id"]), headers=alice[1], params=params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "query"


async def test_the_author_shows_the_name_identity_last_announced(
    client: httpx.AsyncClient, identity: httpx.AsyncClient, make_user, task
) -> None:
    """user.updated reaches the author directory; every comment of the author shows it."""
    author, headers = await make_user()
    comment = await post_comment(client, headers, task["id"])
    assert comment["author"]["full_name"] == author["full_name"]
    renamed = await identity.put("/api/auth/me", headers=headers, json={"full_name": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    for _ in range(500):
        listed, _ = await list_comments(client, headers, task["id"])
        if listed[0]["author"]["full_name"] == "Renamed":
            break
        await asyncio.sleep(0.01)
    assert listed[0]["author"] == {**public_user(author), "full_name": "Renamed"}


async def test_tasks_unreachable_is_503_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    working = app.state.tasks_client
    nowhere = make_http_client("http://127.0.0.1:9", timeout=2)
    app.state.tasks_client = TasksClient(nowhere, app.state.settings.SECRET_KEY)
    try:
        before = await rows_of_task(app, task["id"]), await outbox_size(app)
        for method, url in [
            ("POST", comments_url(task["id"])),
            ("GET", comments_url(task["id"])),
            ("PUT", comments_url(task["id"], comment["id"])),
            ("DELETE", comments_url(task["id"], comment["id"])),
        ]:
            response = await client.request(method, url, headers=alice[1], json={"content": "y"})
            assert response.status_code == 503, method
            assert response.json()["code"] == "unavailable"
        assert (await rows_of_task(app, task["id"]), await outbox_size(app)) == before
    finally:
        app.state.tasks_client = working
        await nowhere.aclose()


async def test_the_gateway_claim_spares_asking_tasks_and_nothing_else(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    """With the gateway's signed claim that the task was just seen live, the list is served
    while tasks is unreachable; a forged claim or a write is not spared the check, and a
    claim needs a valid caller all the same."""
    comment = await post_comment(client, alice[1], task["id"])
    secret = app.state.settings.SECRET_KEY
    claimed = {**alice[1], "X-Task-Seen": task_seen_claim(secret, task["id"])}
    forged = {**alice[1], "X-Task-Seen": task_seen_claim("not-the-secret", task["id"])}
    working = app.state.tasks_client
    nowhere = make_http_client("http://127.0.0.1:9", timeout=2)
    app.state.tasks_client = TasksClient(nowhere, secret)
    try:
        listed = await client.get(comments_url(task["id"]), headers=claimed)
        refused = await client.get(comments_url(task["id"]), headers=forged)
        written = await client.post(
            comments_url(task["id"]), headers=claimed, json={"content": "y"}
        )
        anonymous = await client.get(
            comments_url(task["id"]), headers={"X-Task-Seen": claimed["X-Task-Seen"]}
        )
    finally:
        app.state.tasks_client = working
        await nowhere.aclose()
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()] == [comment["id"]]
    assert refused.status_code == 503
    assert written.status_code == 503
    assert anonymous.status_code == 401


async def test_the_wrong_service_secret_is_503_not_a_leak(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    """Tasks refuses a comments service with another SECRET_KEY; comments reports that as a
    dependency failure, never as a missing task or a success."""
    working = app.state.tasks_client
    app.state.tasks_client = TasksClient(working.client, "another-secret")
    try:
        response = await client.get(comments_url(task["id"]), headers=alice[1])
        assert response.status_code == 503
    finally:
        app.state.tasks_client = working


async def test_the_app_makes_and_closes_its_tasks_client(app: FastAPI) -> None:
    other = create_app(comments_settings())
    async with other.router.lifespan_context(other):
        tasks_client = other.state.tasks_client
        assert isinstance(tasks_client, TasksClient)
        assert str(tasks_client.client.base_url) == "http://tasks.comments-test"
        assert not tasks_client.client.is_closed
    assert tasks_client.client.is_closed


async def test_openapi_lists_the_routes(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/tasks/{task_id}/comments"]) == {"get", "post"}
    assert set(paths["/api/tasks/{task_id}/comments/{comment_id}"]) == {"put", "delete"}


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": "ok", "database": "ok"}


async def test_reads_write_nothing(app: FastAPI, client: httpx.AsyncClient, alice, task) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    before = await rows_of_task(app, task["id"]), await outbox_size(app)
    assert await list_comments(client, alice[1], task["id"]) == ([comment], 1)
    assert (await rows_of_task(app, task["id"]), await outbox_size(app)) == before


async def test_the_migration_made_the_tables_and_the_list_index(app: FastAPI) -> None:
    definition = await scalar(
        app,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'comments' "
        "AND indexname = 'ix_comments_task_id_created_at_id'",
    )
    assert definition.endswith("USING btree (task_id, created_at, id)")
    tables = await scalar(
        app,
        "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables "
        "WHERE schemaname = 'comments'",
    )
    assert tables == [
        "alembic_version",
        "comments",
        "deleted_tasks",
        "event_queue",
        "idempotency_keys",
        "inbox",
        "outbox",
        "users",
    ]
    assert await scalar(app, "SELECT version_num FROM alembic_version") == "0003"
