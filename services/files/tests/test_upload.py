"""Uploads that must be refused, against each storage: size (413), type (415), shape (422);
names made safe; and an upload that fails at any step leaves no bytes, rows or events."""

import uuid

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from files.repository import FileRepository
from taskhub_common.errors import ServiceUnavailable

from .conftest import (
    DOCX,
    DOCX_TYPE,
    EXE,
    PDF,
    PNG,
    TEXT,
    XLSX_TYPE,
    ZIP,
    events_of_task,
    files_url,
    rows_of_task,
    spooled_files,
    stored_keys,
    upload,
    upload_ok,
)


async def assert_nothing_stored(app: FastAPI, task_id: str) -> None:
    assert await rows_of_task(app, task_id) == []
    assert await stored_keys(app, task_id) == []
    assert await events_of_task(app, task_id) == []
    assert spooled_files(app) == []


def multipart(*parts: bytes, boundary: bytes = b"bound") -> bytes:
    """A multipart body written out by hand, for what an HTTP client library would not send."""
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--\r\n"


MULTIPART = "multipart/form-data; boundary=bound"


async def test_oversize_is_413_while_streaming(app: FastAPI, start_files_app, task, owner) -> None:
    limit = 1000
    async with start_files_app(MAX_FILE_SIZE=limit, MAX_FILES_PER_UPLOAD=2) as (small, client):
        [exact] = await upload_ok(
            client, task["id"], owner[1], ("a.txt", b"x" * limit, "text/plain")
        )
        assert exact["size"] == limit

        too_big = await upload(
            client, task["id"], owner[1], ("b.txt", b"x" * (limit + 1), "text/plain")
        )
        assert too_big.status_code == 413
        assert too_big.json()["code"] == "too_large"
        assert too_big.json()["detail"] == "b.txt is larger than the limit of 1000 bytes"

        # Refused as soon as the limit is passed, not after the whole body was read.
        chunks_read = 0

        async def endless_file():
            nonlocal chunks_read
            yield b'--bound\r\nContent-Disposition: form-data; name="files"; filename="big.txt"'
            yield b"\r\nContent-Type: text/plain\r\n\r\n"
            for _ in range(1000):
                chunks_read += 1
                yield b"y" * 100
            yield b"\r\n--bound--\r\n"

        streamed = await client.post(
            files_url(task["id"]),
            headers={**owner[1], "Content-Type": MULTIPART},
            content=endless_file(),
        )
        assert streamed.status_code == 413
        assert chunks_read <= 12, f"{chunks_read} chunks were read"

        # A declared length past anything allowed is refused before the body is read.
        declared = await client.post(
            files_url(task["id"]),
            headers={**owner[1], "Content-Type": MULTIPART, "Content-Length": str(10**9)},
            content=endless_file(),
        )
        assert declared.status_code == 413
        assert declared.json()["detail"].startswith("The request body is larger than the limit")

        too_many = await upload(
            client, task["id"], owner[1], *[(f"{i}.txt", b"x", "text/plain") for i in range(3)]
        )
        assert too_many.status_code == 422
        assert too_many.json()["detail"][0]["msg"] == "At most 2 files per upload"
        assert spooled_files(small) == []
    rows = await rows_of_task(app, task["id"])
    assert [row.original_filename for row in rows] == ["a.txt"]
    assert await stored_keys(app, task["id"]) == [rows[0].storage_key]


SPOOFS = [
    pytest.param(("photo.png", EXE, "image/png"), id="an executable claiming image/png"),
    pytest.param(("evil.exe", PNG, "image/png"), id="a png header on an .exe"),
    pytest.param(("evil.exe", PNG, "application/x-msdownload"), id="an .exe by its type"),
    pytest.param(("photo.jpg", PNG, "image/jpeg"), id="a png claiming image/jpeg"),
    pytest.param(("doc.pdf", PNG, "application/pdf"), id="a png claiming application/pdf"),
    pytest.param(("notes.txt", PNG, "text/plain"), id="binary claiming text/plain"),
    pytest.param(("notes.txt", b"abc\x00def", "text/plain"), id="text with a NUL byte"),
    pytest.param(("notes.txt", b"caf\xe9", "text/plain"), id="text that is not UTF-8"),
    pytest.param(("data.csv", EXE, "text/csv"), id="an executable claiming text/csv"),
    pytest.param(("page.html", b"<b>x</b>", "text/html"), id="a type not allowed"),
    pytest.param(("page.html", b"<b>x</b>", "text/plain"), id="an html name"),
    pytest.param(("icon.svg", b"<svg/>", "image/svg+xml"), id="svg"),
    pytest.param(("run.bat", b"echo hi\r\n", "text/plain"), id="a script as text"),
    pytest.param(("a.docx", PDF, DOCX_TYPE), id="a pdf claiming docx"),
    pytest.param(("a.zip", ZIP, "application/x-zip"), id="a type not in the list"),
]


@pytest.mark.parametrize("item", SPOOFS)
async def test_spoofed_types_are_415(app: FastAPI, client, task, owner, item) -> None:
    response = await upload(client, task["id"], owner[1], item)
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert response.json()["detail"].startswith(item[0])
    await assert_nothing_stored(app, task["id"])


async def test_zip_and_office_types_agree(client, task, owner) -> None:
    """A zip-based office document may sniff as a plain zip, and an office document is a zip."""
    files = await upload_ok(
        client,
        task["id"],
        owner[1],
        ("letter.docx", DOCX, DOCX_TYPE),
        ("letter.zip", DOCX, "application/zip"),
        ("plain.zip", ZIP, "application/zip"),
        ("sheet.xlsx", ZIP, XLSX_TYPE),
    )
    assert [f["filename"].split(".")[1] for f in files] == ["docx", "zip", "zip", "xlsx"]


async def test_a_part_without_a_type_is_text(client, task, owner) -> None:
    """RFC 7578: a part without a Content-Type is text/plain, and must be text then."""
    for content, status in [(TEXT, 201), (PNG, 415)]:
        response = await client.post(
            files_url(task["id"]),
            headers={**owner[1], "Content-Type": MULTIPART},
            content=multipart(
                b'Content-Disposition: form-data; name="files"; filename="readme"\r\n\r\n' + content
            ),
        )
        assert response.status_code == status, response.text
    assert (
        response.json()["detail"]
        == "readme: the content is not text/plain (UTF-8 text without NUL bytes)"
    )


async def test_one_bad_file_stores_none(app: FastAPI, client, task, owner) -> None:
    good = [("good.png", PNG, "image/png"), ("good.txt", TEXT, "text/plain")]
    for bad, status in [
        (("evil.png", EXE, "image/png"), 415),
        (("empty.txt", b"", "text/plain"), 422),
        (("big.pdf", PDF + b"x" * app.state.settings.MAX_FILE_SIZE, "application/pdf"), 413),
    ]:
        response = await upload(client, task["id"], owner[1], *good, bad)
        assert response.status_code == status, response.text
        await assert_nothing_stored(app, task["id"])


async def test_empty_and_missing_files_are_422(app: FastAPI, client, task, owner) -> None:
    url = files_url(task["id"])
    headers = owner[1]
    empty = await upload(client, task["id"], headers, ("empty.txt", b"", "text/plain"))
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["msg"] == "empty.txt is empty"

    other_field = await client.post(url, headers=headers, files={"file": ("a.txt", TEXT)})
    assert other_field.status_code == 422
    assert other_field.json()["detail"][0]["loc"] == ["body", "files"]

    not_a_file = await client.post(
        url,
        headers={**headers, "Content-Type": MULTIPART},
        content=multipart(b'Content-Disposition: form-data; name="files"\r\n\r\nhello'),
    )
    assert not_a_file.status_code == 422

    for body in [{"json": {"files": []}}, {"content": b""}, {"data": {"files": "x"}}]:
        response = await client.post(url, headers=headers, **body)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid"

    cut_short = await client.post(
        url,
        headers={**headers, "Content-Type": MULTIPART},
        content=b'--bound\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhalf a fi",
    )
    assert cut_short.status_code == 422
    malformed = await client.post(
        url, headers={**headers, "Content-Type": MULTIPART}, content=b"--bound\r\nno headers\r\n"
    )
    assert malformed.status_code == 422
    await assert_nothing_stored(app, task["id"])


async def test_bad_uuids_are_422(client, task, owner) -> None:
    for method, path in [
        ("POST", "/api/tasks/not-a-uuid/files"),
        ("GET", "/api/tasks/not-a-uuid/files"),
        ("GET", f"/api/tasks/not-a-uuid/files/{uuid.uuid4()}"),
        ("GET", f"/api/tasks/{task['id']}/files/not-a-uuid"),
        ("DELETE", f"/api/tasks/{task['id']}/files/not-a-uuid"),
    ]:
        response = await client.request(method, path, headers=owner[1])
        assert response.status_code == 422, (method, path)
        assert response.json()["detail"][0]["type"] == "uuid_parsing"


async def test_names_are_made_safe(app: FastAPI, client, task, owner) -> None:
    """The name is only metadata: folders, control and bidi characters and quotes never reach
    the stored name or break the Content-Disposition header."""
    raw_name = (
        '..\\..\\windows\\evil"quoted\\"\u202e\u2028name\x85\x01\ttab  r\u00e9sum\u00e9.txt'
    ).encode()
    body = multipart(
        b'Content-Disposition: form-data; name="files"; filename="' + raw_name + b'"\r\n'
        b"Content-Type: text/plain\r\n\r\n" + TEXT
    )
    response = await client.post(
        files_url(task["id"]), headers={**owner[1], "Content-Type": MULTIPART}, content=body
    )
    assert response.status_code == 201, response.text
    [file] = response.json()
    assert file["original_filename"] == 'evil"quoted"name tab résumé.txt'
    assert file["filename"] == f"{file['id']}.txt"
    download = await client.get(files_url(task["id"], file["id"]), headers=owner[1])
    assert download.content == TEXT
    assert download.headers["content-disposition"] == (
        'attachment; filename="evilquotedname tab resume.txt"; '
        "filename*=UTF-8''evil%22quoted%22name%20tab%20r%C3%A9sum%C3%A9.txt"
    )
    [key] = await stored_keys(app, task["id"])
    assert key == f"tasks/{task['id']}/{file['filename']}"

    long_name = "x" * 400 + ".pdf"
    [long] = await upload_ok(client, task["id"], owner[1], (long_name, PDF, "application/pdf"))
    assert long["original_filename"] == "x" * 251 + ".pdf"


async def test_a_failed_store_leaves_nothing(
    app: FastAPI, client_500, task, owner, monkeypatch
) -> None:
    storage = app.state.storage
    real_put = storage.put
    calls = []

    async def put_failing_the_second(key, source, content_type):
        calls.append(key)
        if len(calls) == 2:
            raise ServiceUnavailable("The file storage is unavailable")
        await real_put(key, source, content_type)

    monkeypatch.setattr(storage, "put", put_failing_the_second)
    response = await upload(
        client_500,
        task["id"],
        owner[1],
        ("a.png", PNG, "image/png"),
        ("b.png", PNG, "image/png"),
        ("c.png", PNG, "image/png"),
    )
    assert response.status_code == 503
    assert len(calls) == 3
    await assert_nothing_stored(app, task["id"])


@pytest.mark.parametrize("failing", ["insert", "commit"])
async def test_a_failed_database_write_leaves_no_bytes(
    app: FastAPI, client_500, task, owner, monkeypatch, failing
) -> None:
    real_add_many = FileRepository.add_many

    async def add_many(self, files):
        if failing == "insert":
            raise RuntimeError("the database went away")
        await real_add_many(self, files)
        self.session.info["wrote_files"] = True

    monkeypatch.setattr(FileRepository, "add_many", add_many)
    real_commit = AsyncSession.commit

    async def commit(self):
        if self.info.pop("wrote_files", False):
            raise RuntimeError("the commit failed")
        await real_commit(self)

    monkeypatch.setattr(AsyncSession, "commit", commit)
    response = await upload(
        client_500, task["id"], owner[1], ("a.png", PNG, "image/png"), ("b.txt", TEXT, "text/plain")
    )
    assert response.status_code == 500
    assert response.json()["code"] == "internal"
    await assert_nothing_stored(app, task["id"])
