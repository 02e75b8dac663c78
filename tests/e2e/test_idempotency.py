"""Idempotency-Key through the gateway, in both modes: a retried change is done once."""

import uuid

import httpx

from taskhub_common.testing import create_task
from tests.e2e.accounts import register


async def test_a_delete_retried_after_it_committed_answers_204_again(
    api: httpx.AsyncClient,
) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"], title="Retried")
    url = f"/api/tasks/{task['id']}"
    headers = {**owner["headers"], "Idempotency-Key": str(uuid.uuid4())}
    first = await api.delete(url, headers=headers)
    assert first.status_code == 204
    # The client never saw that answer (say the connection dropped) and tries again.
    again = await api.delete(url, headers=headers)
    assert again.status_code == 204, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert (await api.get(url, headers=owner["headers"])).status_code == 404
    fresh = {**owner["headers"], "Idempotency-Key": str(uuid.uuid4())}
    assert (await api.delete(url, headers=fresh)).status_code == 404


async def test_a_retried_comment_is_posted_once(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"], title="Commented")
    url = f"/api/tasks/{task['id']}/comments"
    headers = {**owner["headers"], "Idempotency-Key": str(uuid.uuid4())}
    first = await api.post(url, headers=headers, json={"content": "once"})
    again = await api.post(url, headers=headers, json={"content": "once"})
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json()["id"] == first.json()["id"]
    listed = await api.get(url, headers=owner["headers"])
    assert [comment["id"] for comment in listed.json()] == [first.json()["id"]]
    other = await api.post(url, headers=headers, json={"content": "twice"})
    assert other.status_code == 422
