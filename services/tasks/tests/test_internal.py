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
