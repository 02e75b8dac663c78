"""Idempotency-Key on the files routes: a retried upload stores the bytes once; a retried
delete answers 204 again."""

import uuid

from fastapi import FastAPI
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from taskhub_common.idempotency import idempotency_keys

from .conftest import PNG, events_of, files_url, rows_of_task, stored_keys, upload


async def test_a_retried_upload_stores_once_and_a_retried_delete_replays(
    app: FastAPI, client, task, owner, stranger
) -> None:
    _, headers = owner
    keyed = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    first = await upload(client, task["id"], keyed, ("chart.png", PNG, "image/png"))
    again = await upload(client, task["id"], keyed, ("chart.png", PNG, "image/png"))
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await rows_of_task(app, task["id"])) == 1
    assert len(await stored_keys(app, task["id"])) == 1
    # Another file under the same key is another request: refused, nothing stored.
    other = await upload(client, task["id"], keyed, ("other.png", PNG, "image/png"))
    assert other.status_code == 422
    assert len(await stored_keys(app, task["id"])) == 1

    [file] = first.json()
    url = files_url(task["id"], file["id"])
    delete_headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    refused = await client.delete(url, headers={**delete_headers, **stranger[1]})
    assert refused.status_code in (403, 404)
    first_delete = await client.delete(url, headers=delete_headers)
    again_delete = await client.delete(url, headers=delete_headers)
    assert (first_delete.status_code, again_delete.status_code) == (204, 204)
    assert again_delete.headers["idempotent-replayed"] == "true"
    assert [e["type"] for e in await events_of(app, file["id"])] == [
        "file.uploaded",
        "file.deleted",
    ]
    assert await stored_keys(app, task["id"]) == []


async def test_an_upload_in_flight_is_409_and_a_refused_one_frees_its_key(
    app: FastAPI, client, task, owner
) -> None:
    user, headers = owner
    key = str(uuid.uuid4())
    keyed = {**headers, "Idempotency-Key": key}
    # What a running upload leaves while its body streams in.
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            insert(idempotency_keys).values(
                caller=user["id"], key=key, request_hash=b"", status_code=0, headers={}, body=b""
            )
        )
    busy = await upload(client, task["id"], keyed, ("a.png", PNG, "image/png"))
    assert busy.status_code == 409, busy.text
    assert await stored_keys(app, task["id"]) == []
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(delete(idempotency_keys).where(idempotency_keys.c.key == key))

    refused = await upload(client, task["id"], keyed, ("a.svg", b"<svg/>", "image/svg+xml"))
    assert refused.status_code == 415
    # The failure kept nothing: the same key now serves another upload.
    accepted = await upload(client, task["id"], keyed, ("a.png", PNG, "image/png"))
    assert accepted.status_code == 201, accepted.text
    assert "idempotent-replayed" not in accepted.headers
    assert len(await stored_keys(app, task["id"])) == 1
