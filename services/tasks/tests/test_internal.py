"""The internal API other services ask about a task (never routed by the gateway)."""

import uuid

import httpx
from fastapi import FastAPI

from taskhub_common.internal_auth import service_headers
from taskhub_common.testing import create_task


async def test_task_reference_needs_the_service_token(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    task = await create_task(client, user[1])
    url = f"/internal/tasks/{task['id']}"
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers=user[1])).status_code == 401, "a user token is not enough"
    wrong = service_headers("another-secret")
    assert (await client.get(url, headers=wrong)).status_code == 401


async def test_task_reference_of_live_unknown_and_deleted_tasks(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    headers = service_headers(app.state.settings.SECRET_KEY)
    task = await create_task(client, user[1])
    url = f"/internal/tasks/{task['id']}"
    reference = await client.get(url, headers=headers)
    assert reference.status_code == 200
    assert reference.json() == {
        "id": task["id"],
        "created_by": task["created_by"],
        "assigned_to": None,
    }
    assert (await client.get(f"/internal/tasks/{uuid.uuid4()}", headers=headers)).status_code == 404
    assert (await client.get("/internal/tasks/not-a-uuid", headers=headers)).status_code == 422
    assert (await client.delete(f"/api/tasks/{task['id']}", headers=user[1])).status_code == 204
    assert (await client.get(url, headers=headers)).status_code == 404


async def test_export_pages_every_task_in_id_order_deleted_ones_too(
    app: FastAPI, client: httpx.AsyncClient, user
) -> None:
    assert (await client.get("/internal/tasks/export")).status_code == 401
    assert (await client.get("/internal/tasks/export", headers=user[1])).status_code == 401
    headers = service_headers(app.state.settings.SECRET_KEY)
    mine = [await create_task(client, user[1]) for _ in range(3)]
    assert (await client.delete(f"/api/tasks/{mine[0]['id']}", headers=user[1])).status_code == 204
    exported: list[dict] = []
    after: str | None = None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = await client.get("/internal/tasks/export", headers=headers, params=params)
        assert page.status_code == 200, page.text
        if not page.json():
            break
        assert len(page.json()) <= 2
        exported += page.json()
        after = page.json()[-1]["id"]
    ids = [task["id"] for task in exported]
    assert ids == sorted(ids, key=uuid.UUID) and len(ids) == len(set(ids))
    by_id = {task["id"]: task for task in exported}
    assert by_id[mine[0]["id"]]["is_deleted"] is True
    assert by_id[mine[1]["id"]]["title"] == mine[1]["title"]
    bad = await client.get("/internal/tasks/export", headers=headers, params={"limit": 0})
    assert bad.status_code == 422
