"""The file attachment API through the gateway, in both modes (a local folder in the embedded
mode, an S3 API in the distributed one)."""

import asyncio
import os
import struct
import uuid
import zlib

import httpx
import pytest

from taskhub_common.testing import create_task
from tests.e2e.accounts import register

MiB = 1024 * 1024


def png(size: int = 4) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x00\x80\xff" * size for _ in range(size)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = png()
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(100)


def url(task: dict | str, file: dict | str | None = None) -> str:
    task_id = task["id"] if isinstance(task, dict) else task
    base = f"/api/tasks/{task_id}/files"
    if file is None:
        return base
    return f"{base}/{file['id'] if isinstance(file, dict) else file}"


async def upload(
    api: httpx.AsyncClient, account: dict, task: dict, *files: tuple[str, bytes, str]
) -> httpx.Response:
    return await api.post(
        url(task), headers=account["headers"], files=[("files", item) for item in files]
    )


async def upload_ok(
    api: httpx.AsyncClient, account: dict, task: dict, *files: tuple[str, bytes, str]
) -> list[dict]:
    response = await upload(api, account, task, *files)
    assert response.status_code == 201, response.text
    return response.json()


async def test_upload_download_list_delete(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    [file] = await upload_ok(api, owner, task, ("Résumé 2026.png", PNG, "image/png"))
    assert file["task_id"] == task["id"]
    assert file["filename"] == f"{file['id']}.png"
    assert file["original_filename"] == "Résumé 2026.png"
    assert file["content_type"] == "image/png"
    assert file["size"] == len(PNG)
    assert file["uploaded_by"] == owner["id"]

    listed = await api.get(url(task), headers=owner["headers"])
    assert listed.status_code == 200
    assert listed.json() == [file]
    view = await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])
    assert view.json()["files"] == [file]
    assert "files" not in view.headers.get("X-Missing-Parts", "")

    download = await api.get(url(task, file), headers=owner["headers"])
    assert download.status_code == 200
    assert download.content == PNG
    assert download.headers["content-type"] == "image/png"
    assert download.headers["x-content-type-options"] == "nosniff"
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"Resume 2026.png\"; filename*=UTF-8''R%C3%A9sum%C3%A9%202026.png"
    )

    assert (await api.delete(url(task, file), headers=owner["headers"])).status_code == 204
    assert (await api.get(url(task), headers=owner["headers"])).json() == []
    assert (await api.get(url(task, file), headers=owner["headers"])).status_code == 404
    view = await api.get(f"/api/tasks/{task['id']}", headers=owner["headers"])
    assert view.json()["files"] == []


async def test_several_and_large_files_stream_through(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    # Incompressible and just under the 10 MiB limit: many chunks each way.
    large = PDF + os.urandom(10 * MiB - len(PDF))
    text = "zeile eins\nzweite Zeile: äöü\n".encode()
    files = await upload_ok(
        api,
        owner,
        task,
        ("big.pdf", large, "application/pdf"),
        ("notes.txt", text, "text/plain"),
        ("pic.png", PNG, "image/png"),
    )
    assert [f["size"] for f in files] == [len(large), len(text), len(PNG)]
    for file, content in zip(files, [large, text, PNG], strict=True):
        download = await api.get(url(task, file), headers=owner["headers"])
        assert download.status_code == 200
        assert download.content == content
        assert download.headers["content-length"] == str(len(content))
    assert (await api.get(url(task), headers=owner["headers"])).json() == files


async def test_anonymous_is_401_everywhere(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    some_file = uuid.uuid4()
    for method, path in [
        ("POST", url(task)),
        ("GET", url(task)),
        ("GET", url(task, str(some_file))),
        ("DELETE", url(task, str(some_file))),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 401, (method, path)


async def test_who_may_delete(api: httpx.AsyncClient) -> None:
    owner, uploader, stranger = await register(api), await register(api), await register(api)
    task = await create_task(api, owner["headers"])
    first, second = await upload_ok(
        api,
        uploader,
        task,
        ("a.txt", b"first\n", "text/plain"),
        ("b.txt", b"second\n", "text/plain"),
    )
    assert (await api.delete(url(task, first), headers=stranger["headers"])).status_code == 403
    read = await api.get(url(task, first), headers=stranger["headers"])
    assert read.content == b"first\n", "a second user reads but may not delete"
    assert (await api.delete(url(task, first), headers=uploader["headers"])).status_code == 204
    assert (await api.delete(url(task, second), headers=owner["headers"])).status_code == 204
    assert (await api.get(url(task), headers=owner["headers"])).json() == []


async def test_refused_uploads(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    spoofed = await upload(api, owner, task, ("photo.png", EXE, "image/png"))
    assert spoofed.status_code == 415
    assert spoofed.json()["code"] == "unsupported_media_type"
    renamed = await upload(api, owner, task, ("setup.exe", PNG, "image/png"))
    assert renamed.status_code == 415
    empty = await upload(api, owner, task, ("empty.txt", b"", "text/plain"))
    assert empty.status_code == 422
    missing = await api.post(url(task), headers=owner["headers"], files={"other": ("a.txt", b"x")})
    assert missing.status_code == 422
    # Over the limit, together with a good file: refused while streaming, and nothing kept.
    oversize = await upload(
        api,
        owner,
        task,
        ("ok.png", PNG, "image/png"),
        ("huge.txt", b"x" * (10 * MiB + 1), "text/plain"),
    )
    assert oversize.status_code == 413
    assert oversize.json()["code"] == "too_large"
    assert (await api.get(url(task), headers=owner["headers"])).json() == []
    assert (
        await api.get("/api/tasks/not-a-uuid/files", headers=owner["headers"])
    ).status_code == 422


async def test_unknown_and_deleted_tasks_are_404(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    unknown = str(uuid.uuid4())
    assert (await api.get(url(unknown), headers=owner["headers"])).status_code == 404
    response = await upload(api, owner, {"id": unknown}, ("a.txt", b"x\n", "text/plain"))
    assert response.status_code == 404
    task = await create_task(api, owner["headers"])
    [file] = await upload_ok(api, owner, task, ("a.txt", b"kept\n", "text/plain"))
    assert (
        await api.get(url(task, str(uuid.uuid4())), headers=owner["headers"])
    ).status_code == 404
    assert (
        await api.delete(f"/api/tasks/{task['id']}", headers=owner["headers"])
    ).status_code == 204
    # task.deleted reaches the files service asynchronously.
    async with asyncio.timeout(15):
        while (await api.get(url(task, file), headers=owner["headers"])).status_code != 404:
            await asyncio.sleep(0.1)
    assert (await api.get(url(task), headers=owner["headers"])).status_code == 404
    assert (await api.delete(url(task, file), headers=owner["headers"])).status_code == 404
    response = await upload(api, owner, task, ("b.txt", b"x\n", "text/plain"))
    assert response.status_code == 404


async def test_openapi_holds_the_file_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert "post" in paths["/api/tasks/{task_id}/files"]
    assert {"get", "delete"} <= set(paths["/api/tasks/{task_id}/files/{file_id}"])


@pytest.mark.parametrize("name", ['a"b.txt', "a\\b.txt", "semi;colon.txt", "日本語.txt"])
async def test_names_come_back_in_a_safe_header(api: httpx.AsyncClient, name: str) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    [file] = await upload_ok(api, owner, task, (name, b"text\n", "text/plain"))
    disposition = (await api.get(url(task, file), headers=owner["headers"])).headers[
        "content-disposition"
    ]
    assert disposition.startswith('attachment; filename="')
    fallback = disposition.split('filename="', 1)[1].split('"; filename*=', 1)[0]
    assert '"' not in fallback and "\\" not in fallback
    assert disposition.isascii() and disposition.isprintable()
