"""The files endpoints, against each storage: shapes, bytes, authorization, validation, and
that no bytes are left without metadata nor metadata without bytes."""

import re
import uuid
from datetime import datetime

from fastapi import FastAPI
from sqlalchemy import delete

from taskhub_common.deleted_tasks import deleted_tasks
from taskhub_common.testing import wait_task_deleted

from .conftest import (
    DOCX,
    DOCX_TYPE,
    PDF,
    PNG,
    TEXT,
    create_task,
    events_of,
    files_url,
    rows_of_task,
    spooled_files,
    storage_key,
    stored_keys,
    upload,
    upload_ok,
)

FILE_FIELDS = {
    "id",
    "task_id",
    "filename",
    "original_filename",
    "content_type",
    "size",
    "uploaded_by",
    "created_at",
}


async def test_upload_download_list_delete(app: FastAPI, client, task, owner) -> None:
    user, headers = owner
    [file] = await upload_ok(client, task["id"], headers, ("chart.png", PNG, "image/png"))
    assert set(file) == FILE_FIELDS
    uuid.UUID(file["id"])
    assert file["task_id"] == task["id"]
    assert re.fullmatch(r"[0-9a-f-]{36}\.png", file["filename"])
    assert file["filename"] == f"{file['id']}.png"
    assert file["original_filename"] == "chart.png"
    assert file["content_type"] == "image/png"
    assert file["size"] == len(PNG)
    assert file["uploaded_by"] == user["id"]
    assert datetime.fromisoformat(file["created_at"]).utcoffset().total_seconds() == 0

    listed = await client.get(files_url(task["id"]), headers=headers)
    assert listed.status_code == 200
    assert listed.json() == [file]

    download = await client.get(files_url(task["id"], file["id"]), headers=headers)
    assert download.status_code == 200
    assert download.content == PNG
    assert download.headers["content-type"] == "image/png"
    assert download.headers["content-length"] == str(len(PNG))
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"chart.png\"; filename*=UTF-8''chart.png"
    )

    key = await storage_key(app, file["id"])
    assert await stored_keys(app, task["id"]) == [key]
    assert await app.state.storage.exists(key)
    deleted = await client.delete(files_url(task["id"], file["id"]), headers=headers)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert not await app.state.storage.exists(key), "the bytes go with the file"
    assert await stored_keys(app, task["id"]) == []
    [row] = await rows_of_task(app, task["id"])
    assert row.is_deleted, "the row is kept, marked deleted"
    assert (await client.get(files_url(task["id"]), headers=headers)).json() == []
    for method in ("GET", "DELETE"):
        again = await client.request(method, files_url(task["id"], file["id"]), headers=headers)
        assert again.status_code == 404, method
        assert again.json()["detail"] == "File not found"
    assert spooled_files(app) == []


async def test_several_files_in_one_upload(app: FastAPI, client, task, owner, stranger) -> None:
    """Any active user may attach files; each is stored, listed in upload order, and has one
    file.uploaded event that names the task's creator and assignee."""
    uploader, headers = stranger
    sent = [
        ("report.pdf", PDF, "application/pdf"),
        ("notes.txt", TEXT, "text/plain"),
        ("data.csv", b"a,b\n1,2\n", "text/csv"),
        ("letter.docx", DOCX, DOCX_TYPE),
        ("picture.PNG", PNG, "image/png"),
    ]
    files = await upload_ok(client, task["id"], headers, *sent)
    assert [f["original_filename"] for f in files] == [name for name, _, _ in sent]
    assert [f["content_type"] for f in files] == [kind for _, _, kind in sent]
    assert [f["filename"].split(".", 1)[1] for f in files] == ["pdf", "txt", "csv", "docx", "png"]
    listed = (await client.get(files_url(task["id"]), headers=owner[1])).json()
    assert listed == files
    for file, (_, content, kind) in zip(files, sent, strict=True):
        download = await client.get(files_url(task["id"], file["id"]), headers=owner[1])
        assert download.content == content
        assert download.headers["content-type"].split(";")[0] == kind
    text = await client.get(files_url(task["id"], files[1]["id"]), headers=owner[1])
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert len(await stored_keys(app, task["id"])) == len(sent)

    for file in files:
        [event] = await events_of(app, file["id"])
        assert event["routing_key"] == event["type"] == "file.uploaded"
        assert event["producer"] == "files"
        assert event["actor_id"] == uploader["id"]
        assert event["data"] == {
            **file,
            "task_creator_id": task["created_by"],
            "task_assignee_id": None,
        }


async def test_delete_event_names_the_task_people(
    app: FastAPI, client, tasks, make_user, owner
) -> None:
    assignee, assignee_headers = await make_user()
    # The assignee must be in the tasks service's directory: their first call puts them there.
    await tasks.get("/api/tasks", headers=assignee_headers)
    task = await create_task(tasks, owner[1], assigned_to=assignee["id"])
    [file] = await upload_ok(client, task["id"], owner[1], ("a.txt", TEXT, "text/plain"))
    deleted_response = await client.delete(files_url(task["id"], file["id"]), headers=owner[1])
    assert deleted_response.status_code == 204
    uploaded, deleted = await events_of(app, file["id"])
    assert uploaded["type"] == "file.uploaded"
    assert deleted["type"] == "file.deleted"
    assert deleted["actor_id"] == owner[0]["id"]
    assert deleted["data"] == {
        **file,
        "task_creator_id": owner[0]["id"],
        "task_assignee_id": assignee["id"],
    }


async def test_anonymous_is_401_everywhere(client, task) -> None:
    some_file = uuid.uuid4()
    for method, path in [
        ("POST", files_url(task["id"])),
        ("GET", files_url(task["id"])),
        ("GET", files_url(task["id"], str(some_file))),
        ("DELETE", files_url(task["id"], str(some_file))),
    ]:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()["code"] == "not_authenticated"
            assert response.headers["www-authenticate"] == "Bearer"


async def test_who_may_delete(app: FastAPI, client, task, owner, stranger, make_user) -> None:
    """The uploader or the task's creator; anybody else gets 403 and the file stays."""
    uploader = await make_user()
    first, second = await upload_ok(
        client,
        task["id"],
        uploader[1],
        ("one.txt", b"one\n", "text/plain"),
        ("two.txt", b"two\n", "text/plain"),
    )
    refused = await client.delete(files_url(task["id"], first["id"]), headers=stranger[1])
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert len(await stored_keys(app, task["id"])) == 2
    download = await client.get(files_url(task["id"], first["id"]), headers=stranger[1])
    assert download.content == b"one\n", "a second user reads, but may not delete"
    assert [e["type"] for e in await events_of(app, first["id"])] == ["file.uploaded"]

    by_uploader = await client.delete(files_url(task["id"], first["id"]), headers=uploader[1])
    assert by_uploader.status_code == 204
    by_task_creator = await client.delete(files_url(task["id"], second["id"]), headers=owner[1])
    assert by_task_creator.status_code == 204
    assert await stored_keys(app, task["id"]) == []
    assert (await client.get(files_url(task["id"]), headers=owner[1])).json() == []


async def test_unknown_task_and_file_are_404(client, task, owner, tasks) -> None:
    headers = owner[1]
    unknown = str(uuid.uuid4())
    for method, path in [
        ("GET", files_url(unknown)),
        ("GET", files_url(unknown, unknown)),
        ("DELETE", files_url(unknown, unknown)),
        ("GET", files_url(task["id"], unknown)),
        ("DELETE", files_url(task["id"], unknown)),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"
    response = await upload(client, unknown, headers, ("a.txt", TEXT, "text/plain"))
    assert response.status_code == 404
    assert response.json()["detail"] == "Task not found"
    assert (await client.get(files_url(task["id"]), headers=headers)).json() == []
    # A file is found only under its own task.
    other = await create_task(tasks, headers)
    [file] = await upload_ok(client, other["id"], headers, ("a.txt", TEXT, "text/plain"))
    wrong_task = await client.get(files_url(task["id"], file["id"]), headers=headers)
    assert wrong_task.status_code == 404


async def test_files_of_a_deleted_task_are_gone(app: FastAPI, client, tasks, task, owner) -> None:
    headers = owner[1]
    [file] = await upload_ok(client, task["id"], headers, ("a.png", PNG, "image/png"))
    assert (await tasks.delete(f"/api/tasks/{task['id']}", headers=headers)).status_code == 204
    await wait_task_deleted(app, task["id"])
    for method, path in [
        ("GET", files_url(task["id"])),
        ("GET", files_url(task["id"], file["id"])),
        ("DELETE", files_url(task["id"], file["id"])),
    ]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"] == "Task not found"
    response = await upload(client, task["id"], headers, ("b.png", PNG, "image/png"))
    assert response.status_code == 404
    # Nothing destroyed: the delete of a task is soft, and so is this.
    [row] = await rows_of_task(app, task["id"])
    assert not row.is_deleted
    assert await stored_keys(app, task["id"]) == [row.storage_key]


async def test_a_deleted_task_is_refused_before_its_event_arrives(
    app: FastAPI, client, tasks, task, owner
) -> None:
    """Uploads ask the tasks service, which knows at once."""
    assert (await tasks.delete(f"/api/tasks/{task['id']}", headers=owner[1])).status_code == 204
    await wait_task_deleted(app, task["id"])
    # Forget the event: the tasks service alone must refuse the upload.
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(
            delete(deleted_tasks).where(deleted_tasks.c.task_id == uuid.UUID(task["id"]))
        )
    response = await upload(client, task["id"], owner[1], ("a.txt", TEXT, "text/plain"))
    assert response.status_code == 404
    assert await rows_of_task(app, task["id"]) == []


async def test_openapi_documents_the_upload(client) -> None:
    document = (await client.get("/openapi.json")).json()
    upload_operation = document["paths"]["/api/tasks/{task_id}/files"]["post"]
    schema = upload_operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["files"]
    assert schema["properties"]["files"]["items"]["format"] == "binary"
    assert "201" in upload_operation["responses"]
    download = document["paths"]["/api/tasks/{task_id}/files/{file_id}"]["get"]
    assert "application/octet-stream" in download["responses"]["200"]["content"]
