"""Idempotency-Key on the notifier's routes: a retried reminder is made once, a retried delete
answers 204 again, a retried preferences update replays."""

import uuid

import httpx

from .conftest import create_task
from .test_reminders import soon, url


async def test_a_retried_reminder_and_its_retried_delete(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice
) -> None:
    task = await create_task(tasks, alice[1])
    headers = {**alice[1], "Idempotency-Key": str(uuid.uuid4())}
    body = {"remind_at": soon(3600)}
    first = await client.post(url(task), headers=headers, json=body)
    again = await client.post(url(task), headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    listed = (await client.get(url(task), headers=alice[1])).json()
    assert [reminder["id"] for reminder in listed] == [first.json()["id"]]
    other = await client.post(url(task), headers=headers, json={"remind_at": soon(7200)})
    assert other.status_code == 422
    assert len((await client.get(url(task), headers=alice[1])).json()) == 1

    delete_headers = {**alice[1], "Idempotency-Key": str(uuid.uuid4())}
    reminder_url = url(task, first.json()["id"])
    first_delete = await client.delete(reminder_url, headers=delete_headers)
    again_delete = await client.delete(reminder_url, headers=delete_headers)
    assert (first_delete.status_code, again_delete.status_code) == (204, 204)
    assert again_delete.headers["idempotent-replayed"] == "true"
    assert (await client.delete(reminder_url, headers=alice[1])).status_code == 404
