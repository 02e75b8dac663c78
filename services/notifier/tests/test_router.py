"""The notifications API: shape, limits, paging, unread filter, read and read-all, who may."""

import base64
import json
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from notifier.delivery import Notice
from notifier.models import NotificationType
from notifier.repository import unread_count_query

from .conftest import NOTIFICATION_FIELDS, User, execute


async def give(app: FastAPI, user: User, count: int) -> list[uuid.UUID]:
    """`count` notices for the user, one transaction each (so each has its own created_at)."""
    ids = []
    for index in range(count):
        async with app.state.database.sessionmaker() as session, session.begin():
            (notice,) = await app.state.dispatcher.deliver(
                session,
                Notice(
                    type=NotificationType.TASK_ASSIGNED,
                    cause_id=uuid.uuid4(),
                    task_id=uuid.uuid4(),
                    title="New task assigned",
                    message=f"notice {index}",
                ),
                [uuid.UUID(user[0]["id"])],
            )
        ids.append(notice.id)
    return ids


async def listing(client: httpx.AsyncClient, user: User, **params) -> dict:
    response = await client.get("/api/notifications", headers=user[1], params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_list_shape_newest_first(client: httpx.AsyncClient, app: FastAPI, alice) -> None:
    ids = await give(app, alice, 3)
    body = await listing(client, alice)
    assert set(body) == {"notifications", "unread_count", "next_cursor"}
    assert body["unread_count"] == 3
    assert body["next_cursor"] is None
    assert [n["id"] for n in body["notifications"]] == [str(i) for i in reversed(ids)]
    first = body["notifications"][0]
    assert set(first) == NOTIFICATION_FIELDS
    assert first["user_id"] == alice[0]["id"]
    assert first["type"] == "task_assigned"
    assert first["message"] == "notice 2"
    assert first["is_read"] is False
    assert first["created_at"].endswith("Z") or "+00:00" in first["created_at"]


async def test_trailing_slash_is_the_same_list(client: httpx.AsyncClient, app: FastAPI, alice):
    await give(app, alice, 1)
    with_slash = await client.get("/api/notifications/", headers=alice[1])
    assert with_slash.status_code == 200
    assert with_slash.json() == await listing(client, alice)


@pytest.mark.parametrize("limit", [0, 101, -1, "x"])
async def test_limit_out_of_range_is_422(client: httpx.AsyncClient, alice, limit) -> None:
    response = await client.get("/api/notifications", headers=alice[1], params={"limit": limit})
    assert response.status_code == 422


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "zz",
        "not a cursor!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        cursor_of("ab"),
        cursor_of(5),
        cursor_of([]),
        cursor_of({"a": 1, "b": 2}),
        cursor_of(["2024-01-01T00:00:00+00:00", 5]),
        cursor_of(["2024-01-01T00:00:00+00:00", None]),
        cursor_of(["2024-01-01T00:00:00+00:00", ["x"]]),
        cursor_of(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
        cursor_of([5, str(uuid.uuid4())]),
        cursor_of(["yesterday", str(uuid.uuid4())]),
        cursor_of(["2024-01-01T00:00:00", str(uuid.uuid4())]),
        cursor_of(["99999-01-01T00:00:00+00:00", str(uuid.uuid4())]),
        cursor_of("x" * 300),
    ],
)
async def test_a_tampered_cursor_is_422(client: httpx.AsyncClient, alice, cursor: str) -> None:
    response = await client.get("/api/notifications", headers=alice[1], params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_paging_with_the_cursor(client: httpx.AsyncClient, app: FastAPI, alice) -> None:
    ids = [str(i) for i in reversed(await give(app, alice, 5))]
    first = await listing(client, alice, limit=2)
    assert [n["id"] for n in first["notifications"]] == ids[:2]
    second = await listing(client, alice, limit=2, cursor=first["next_cursor"])
    assert [n["id"] for n in second["notifications"]] == ids[2:4]
    last = await listing(client, alice, limit=2, cursor=second["next_cursor"])
    assert [n["id"] for n in last["notifications"]] == ids[4:]
    assert last["next_cursor"] is None
    assert (await listing(client, alice, limit=100))["next_cursor"] is None
    assert len((await listing(client, alice, limit=1))["notifications"]) == 1


async def test_same_instant_notices_page_by_id(client: httpx.AsyncClient, app: FastAPI, alice):
    ids = await give(app, alice, 4)
    await execute(
        app,
        "UPDATE notifications SET created_at = '2030-01-01T00:00:00Z' WHERE user_id = :u",
        u=uuid.UUID(alice[0]["id"]),
    )
    seen = []
    cursor = None
    while True:
        page = await listing(client, alice, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [n["id"] for n in page["notifications"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((str(i) for i in ids), reverse=True)


async def test_read_and_the_unread_filter(client: httpx.AsyncClient, app: FastAPI, alice) -> None:
    older, newer = await give(app, alice, 2)
    response = await client.put(f"/api/notifications/{older}/read", headers=alice[1])
    assert response.status_code == 200
    assert response.json()["id"] == str(older)
    assert response.json()["is_read"] is True
    # POST works too, and reading twice is fine.
    response = await client.post(f"/api/notifications/{older}/read", headers=alice[1])
    assert response.status_code == 200
    body = await listing(client, alice)
    assert body["unread_count"] == 1
    assert [(n["id"], n["is_read"]) for n in body["notifications"]] == [
        (str(newer), False),
        (str(older), True),
    ]
    unread = await listing(client, alice, unread="true")
    assert [n["id"] for n in unread["notifications"]] == [str(newer)]
    assert unread["unread_count"] == 1


async def test_read_all_marks_what_exists_only(client: httpx.AsyncClient, app: FastAPI, alice):
    await give(app, alice, 3)
    response = await client.post("/api/notifications/read-all", headers=alice[1])
    assert response.status_code == 200
    assert response.json() == {"marked_read": 3, "unread_count": 0}
    (later,) = await give(app, alice, 1)
    body = await listing(client, alice)
    assert body["unread_count"] == 1
    assert [n["id"] for n in body["notifications"] if not n["is_read"]] == [str(later)]


async def test_read_all_up_to_the_newest_seen(client: httpx.AsyncClient, app: FastAPI, alice):
    _, second, third = await give(app, alice, 3)
    response = await client.post(
        "/api/notifications/read-all", headers=alice[1], params={"up_to": str(second)}
    )
    assert response.json() == {"marked_read": 2, "unread_count": 1}
    unread = await listing(client, alice, unread="true")
    assert [n["id"] for n in unread["notifications"]] == [str(third)]


async def test_another_users_notice_is_404(
    client: httpx.AsyncClient, app: FastAPI, alice, bob
) -> None:
    (mine,) = await give(app, alice, 1)
    for method in ("PUT", "POST"):
        response = await client.request(method, f"/api/notifications/{mine}/read", headers=bob[1])
        assert response.status_code == 404, method
    response = await client.post(
        "/api/notifications/read-all", headers=bob[1], params={"up_to": str(mine)}
    )
    assert response.status_code == 422
    assert (await listing(client, bob))["notifications"] == []
    assert (await listing(client, alice))["unread_count"] == 1, "bob changed nothing of alice's"
    missing = await client.put(f"/api/notifications/{uuid.uuid4()}/read", headers=alice[1])
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/notifications"),
        ("PUT", f"/api/notifications/{uuid.uuid4()}/read"),
        ("POST", f"/api/notifications/{uuid.uuid4()}/read"),
        ("POST", "/api/notifications/read-all"),
        ("GET", "/api/notifications/preferences"),
        ("PUT", "/api/notifications/preferences"),
        ("GET", "/api/notifications/reminders"),
        ("GET", f"/api/tasks/{uuid.uuid4()}/reminders"),
        ("POST", f"/api/tasks/{uuid.uuid4()}/reminders"),
        ("DELETE", f"/api/tasks/{uuid.uuid4()}/reminders/{uuid.uuid4()}"),
    ],
)
async def test_anonymous_is_401(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path, json={})
    assert response.status_code == 401
    bad = await client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


async def test_unread_count_reads_the_partial_index(app: FastAPI, alice) -> None:
    """Not a scan of the user's notices: the count reads the index of unread ones."""
    await give(app, alice, 3)
    query = unread_count_query(uuid.UUID(alice[0]["id"]))
    compiled = query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(await session.scalars(text(f"EXPLAIN {compiled}")))
    assert "ix_notifications_user_unread" in plan, plan
