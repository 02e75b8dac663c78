"""Idempotency-Key on the tasks routes (taskhub_common.idempotency): replays, refusals, scope."""

import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from taskhub_common.testing import word

from .conftest import count_rows, events_of


def keyed(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or str(uuid.uuid4())}


async def test_a_retried_create_replays_the_first_answer(
    client: httpx.AsyncClient, app: FastAPI, make_user
) -> None:
    _, headers = await make_user()
    headers = keyed(headers)
    body = {"title": f"Once {word()}", "tags": [word()]}
    before = await count_rows(app, "tasks")
    first = await client.post("/api/tasks", headers=headers, json=body)
    again = await client.post("/api/tasks", headers=headers, json=body)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await count_rows(app, "tasks") == before + 1
    assert len(await events_of(app, first.json()["id"])) == 1


async def test_a_retried_delete_answers_204_again_not_404(
    client: httpx.AsyncClient, app: FastAPI, make_user
) -> None:
    _, headers = await make_user()
    task = (await client.post("/api/tasks", headers=headers, json={"title": word()})).json()
    delete_headers = keyed(headers)
    first = await client.delete(f"/api/tasks/{task['id']}", headers=delete_headers)
    again = await client.delete(f"/api/tasks/{task['id']}", headers=delete_headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["idempotent-replayed"] == "true"
    assert len([e for e in await events_of(app, task["id"]) if e["type"] == "task.deleted"]) == 1
    # Without the key (or with a new one) the task is simply gone.
    assert (
        await client.delete(f"/api/tasks/{task['id']}", headers=keyed(headers))
    ).status_code == 404


async def test_the_same_key_with_another_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, make_user
) -> None:
    _, headers = await make_user()
    headers = keyed(headers)
    assert (
        await client.post("/api/tasks", headers=headers, json={"title": "a"})
    ).status_code == 201
    before = await count_rows(app, "tasks")
    other = await client.post("/api/tasks", headers=headers, json={"title": "b"})
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.text
    # Another path with the same key is another request too.
    assert (
        await client.post("/api/tasks/bulk", headers=headers, json={"tasks": [{"title": "a"}]})
    ).status_code == 422
    assert await count_rows(app, "tasks") == before


async def test_a_key_still_in_flight_is_409(
    client: httpx.AsyncClient, app: FastAPI, make_user
) -> None:
    user, headers = await make_user()
    key = str(uuid.uuid4())
    before = await count_rows(app, "tasks")
    # The first request's transaction holds this lock until it commits: hold it here instead.
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": f"idempotency:{user['id']}:{key}"},
        )
        response = await client.post("/api/tasks", headers=keyed(headers, key), json={"title": "x"})
    assert response.status_code == 409, response.text
    assert response.headers["retry-after"] == "1"
    assert await count_rows(app, "tasks") == before
    # Once the first is done the key is free again (the refused request kept nothing).
    response = await client.post("/api/tasks", headers=keyed(headers, key), json={"title": "x"})
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers


async def test_keys_belong_to_their_caller(client: httpx.AsyncClient, make_user) -> None:
    _, alice = await make_user()
    _, bob = await make_user()
    key = str(uuid.uuid4())
    body = {"title": word()}
    first = await client.post("/api/tasks", headers=keyed(alice, key), json=body)
    second = await client.post("/api/tasks", headers=keyed(bob, key), json=body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert second.json()["created_by"] != first.json()["created_by"]
    assert "idempotent-replayed" not in second.headers


async def test_failures_are_not_kept_so_a_retry_runs_again(
    client: httpx.AsyncClient, make_user
) -> None:
    _, owner = await make_user()
    _, stranger = await make_user()
    task = (await client.post("/api/tasks", headers=owner, json={"title": word()})).json()
    headers = keyed(stranger)
    refused = await client.delete(f"/api/tasks/{task['id']}", headers=headers)
    assert refused.status_code == 403
    again = await client.delete(f"/api/tasks/{task['id']}", headers=headers)
    assert again.status_code == 403
    assert "idempotent-replayed" not in again.headers
    assert (await client.get(f"/api/tasks/{task['id']}", headers=owner)).status_code == 200


async def test_anonymous_and_malformed_keys(client: httpx.AsyncClient, app: FastAPI, user) -> None:
    _, headers = user
    anonymous = await client.post("/api/tasks", headers=keyed({}), json={"title": "x"})
    assert anonymous.status_code == 401
    before = await count_rows(app, "tasks")
    for bad in ("", "x" * 256, "caf\u00e9"):
        raw = {**headers, "Idempotency-Key": bad}
        response = await client.post(
            "/api/tasks", headers={k: v.encode() for k, v in raw.items()}, json={"title": "x"}
        )
        assert response.status_code == 422, (bad, response.text)
    assert await count_rows(app, "tasks") == before
