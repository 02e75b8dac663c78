"""Idempotency-Key on the comments routes: a retried create or delete replays its answer."""

import uuid

import httpx
from fastapi import FastAPI

from .conftest import comments_url, events_of_task, post_comment, rows_of_task


async def test_a_retried_create_makes_one_comment(
    app: FastAPI, client: httpx.AsyncClient, bob, task
) -> None:
    _, headers = bob
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    url = comments_url(task["id"])
    first = await client.post(url, headers=headers, json={"content": "Once"})
    again = await client.post(url, headers=headers, json={"content": "Once"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await rows_of_task(app, task["id"])) == 1
    other = await client.post(url, headers=headers, json={"content": "Twice"})
    assert other.status_code == 422
    assert len(await rows_of_task(app, task["id"])) == 1


async def test_a_retried_delete_answers_204_again(
    app: FastAPI, client: httpx.AsyncClient, bob, alice, task
) -> None:
    _, headers = bob
    comment = await post_comment(client, headers, task["id"])
    url = comments_url(task["id"], comment["id"])
    keyed = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    first = await client.delete(url, headers=keyed)
    again = await client.delete(url, headers=keyed)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["idempotent-replayed"] == "true"
    deletes = [e for e in await events_of_task(app, task["id"]) if e["type"] == "comment.deleted"]
    assert len(deletes) == 1
    # Alice's key of the same name is hers: her delete of bob's comment is refused, not replayed.
    refused = await client.delete(
        url, headers={**alice[1], "Idempotency-Key": keyed["Idempotency-Key"]}
    )
    assert refused.status_code in (403, 404)
    assert "idempotent-replayed" not in refused.headers
