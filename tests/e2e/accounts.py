"""Users for the end-to-end tests, registered through the gateway."""

import asyncio

import httpx

from taskhub_common.testing import bearer, new_user

# The stacks' refresh grace: short, so that a reuse past it is tested without a long wait.
E2E_REFRESH_GRACE_SECONDS = 1


async def register(api: httpx.AsyncClient, body: dict | None = None) -> dict:
    """A new account: the registration body, the auth response and ready-made headers."""
    body = body or new_user()
    response = await api.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    account = {"request": body, **response.json()}
    account["headers"] = bearer(account["access_token"])
    account["id"] = account["user"]["id"]
    return account


async def wait_until_tasks_knows(api: httpx.AsyncClient, account: dict, user_id: str) -> None:
    """Assignees must be in the tasks service's user directory, which user.registered fills
    asynchronously: wait until assigning to `user_id` is accepted."""
    probe = await api.post("/api/tasks", headers=account["headers"], json={"title": "probe"})
    async with asyncio.timeout(15):
        while True:
            response = await api.put(
                f"/api/tasks/{probe.json()['id']}",
                headers=account["headers"],
                json={"assigned_to": user_id},
            )
            if response.status_code == 200:
                break
            assert response.status_code == 422, response.text
            await asyncio.sleep(0.1)
    await api.delete(f"/api/tasks/{probe.json()['id']}", headers=account["headers"])
