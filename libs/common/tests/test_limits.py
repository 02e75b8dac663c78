"""The request limits, on a service app served by a real uvicorn over a real socket: a body over
its limit is answered 413 before it is read whole, and the connection is closed under it."""

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import APIRouter, Request
from pydantic import BaseModel

from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.settings import UploadSettings

LIMIT = 64 * 1024
received_bytes: list[int] = []


class Note(BaseModel):
    text: str


router = APIRouter()


@router.post("/notes")
async def add_note(note: Note) -> dict[str, int]:
    return {"length": len(note.text)}


@router.post("/api/tasks/{task_id}/files")
async def upload(request: Request) -> dict[str, int]:
    """Reads the stream itself, as the files service does."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        received_bytes.append(size)
    return {"size": size}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    settings = UploadSettings(
        SERVICE_NAME="limits",
        MAX_JSON_BODY=LIMIT,
        MAX_FILE_SIZE=4 * LIMIT,
        MAX_FILES_PER_UPLOAD=1,
        MAX_HEADER_COUNT=50,
        MAX_HEADER_BYTES=8 * 1024,
    )
    app = create_service_app(ServiceSpec(settings=settings, routers=[router]))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


def chunked_request(path: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    answer = b""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            answer += data
    return answer


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def send_chunked(port: int, path: str, total: int) -> tuple[bytes, int]:
    """Streams a chunked body of `total` bytes unless the server answers first; returns the
    answer and how many bytes went out before it. The read ends only when the server closes
    the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(chunked_request(path))
    chunk = b"1" * 16 * 1024
    sent = 0
    reading = asyncio.create_task(read_until_closed(reader))
    try:
        while sent < total and not reading.done():
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0)
        if sent >= total and not reading.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server closed the connection under the body: what is wanted
    answer = await asyncio.wait_for(reading, timeout=10)
    writer.close()
    return answer, sent


async def test_a_small_json_body_is_accepted(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/notes", json={"text": "x" * 1000})
    assert response.status_code == 200
    assert response.json() == {"length": 1000}


async def test_a_declared_length_over_the_limit_is_refused_before_the_body(base_url: str) -> None:
    port = httpx.URL(base_url).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Only the head goes out: the answer must not wait for the 50 MB it announces.
    writer.write(
        b"POST /notes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 52428800\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=5)  # to EOF: the server closes
    writer.close()
    status, body = status_and_body(answer)
    assert status == 413
    assert body["code"] == "too_large"
    assert body["request_id"]
    assert b"connection: close" in answer.lower()


async def test_a_chunked_body_is_cut_off_at_the_limit(base_url: str) -> None:
    """The finding: a chunked 1.27 GiB body was read whole before the 422. Now the answer comes
    once the limit is passed, and the connection is closed without reading the rest."""
    port = httpx.URL(base_url).port
    started = time.perf_counter()
    answer, sent = await send_chunked(port, "/notes", total=200 * 1024 * 1024)
    status, body = status_and_body(answer)
    assert status == 413
    assert body["code"] == "too_large"
    assert str(LIMIT) in body["detail"]
    # The client stopped far short of its 200 MiB: the server answered and closed.
    assert sent < 16 * 1024 * 1024
    assert time.perf_counter() - started < 10


async def test_an_upload_route_has_its_own_larger_limit(base_url: str) -> None:
    port = httpx.URL(base_url).port
    upload_limit = 4 * LIMIT + 2 * 16 * 1024
    received_bytes.clear()
    answer, _ = await send_chunked(port, "/api/tasks/1/files", total=3 * LIMIT)
    assert status_and_body(answer) == (200, {"size": 3 * LIMIT})
    received_bytes.clear()
    answer, sent = await send_chunked(port, "/api/tasks/1/files", total=100 * 1024 * 1024)
    assert status_and_body(answer)[0] == 413
    assert max(received_bytes) <= upload_limit
    assert sent < 16 * 1024 * 1024


async def test_too_many_headers_are_refused(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        many = {f"x-filler-{index}": "1" for index in range(60)}
        response = await client.post("/notes", json={"text": "x"}, headers=many)
        assert response.status_code == 431
        assert response.json()["code"] == "headers_too_large"
        large = {"x-filler": "y" * 9000}
        response = await client.post("/notes", json={"text": "x"}, headers=large)
        assert response.status_code == 431
        response = await client.post("/notes", json={"text": "x"}, headers={"x-a": "b"})
        assert response.status_code == 200
