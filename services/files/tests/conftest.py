"""The files service in-process, with a real identity and a real tasks service beside it, on a
real PostgreSQL, run once per storage: a local folder and a real S3 API (moto's server).

Identity issues the tokens and publishes `user.*`; tasks answers the files service's internal
task lookups and publishes `task.deleted`; all on the shared in-process bus.
"""

import asyncio
import contextlib
import io
import struct
import uuid
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from sqlalchemy import select

from files.app import create_app
from files.models import File
from files.settings import FilesSettings
from files.storage import LocalStorage, S3Storage
from taskhub_common.outbox import outbox
from taskhub_common.testing import asgi_client, create_task
from taskhub_common.testing.suite import Suite, User, UserFactory

SUITE = Suite("files")
identity_app, identity, tasks_app, tasks, client, make_user = SUITE.shared_fixtures()
Upload = tuple[str, bytes, str]


# Sample files: real formats, so that sniffing them means something.


def png_bytes(width: int = 1, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = png_bytes(4, 4)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# The start of a Windows executable: "MZ", then the DOS header.
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(200)
TEXT = "Grüße, TaskHub!\nsecond line\n".encode()


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


DOCX = zip_bytes({"[Content_Types].xml": "<Types/>", "word/document.xml": "<document/>"})
ZIP = zip_bytes({"readme.txt": "hello"})
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# The servers and apps.


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on a free port, for the whole run."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session", params=["local", "s3"])
def storage_env(request, tmp_path_factory, s3_endpoint: str) -> dict[str, str]:
    """The settings of one storage; every test of the files service runs with each."""
    spool = tmp_path_factory.mktemp(f"spool-{request.param}")
    env = {"UPLOAD_SPOOL_DIR": str(spool)}
    if request.param == "local":
        return {**env, "DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    return {
        **env,
        # A bucket that does not exist yet: the service creates it at start.
        "AWS_BUCKET": f"taskhub-files-{uuid.uuid4().hex[:8]}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CUSTOM_S3_ENDPOINT_URL": s3_endpoint,
    }


def files_settings(storage_env: dict[str, str], **overrides: Any) -> FilesSettings:
    return FilesSettings(**SUITE.env(**{**storage_env, **overrides}))


@pytest.fixture(scope="session")
async def app(tasks_app: FastAPI, storage_env: dict[str, str]) -> AsyncIterator[FastAPI]:
    application = create_app(files_settings(storage_env))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client_500(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """For tests that make the service fail: a 500 is a response, not an exception."""
    async with asgi_client(app, "http://files", raise_app_exceptions=False) as http:
        yield http


@pytest.fixture
def start_files_app(
    app: FastAPI, storage_env: dict[str, str]
) -> Callable[..., contextlib.AbstractAsyncContextManager]:
    """Another started files app with other settings, on the same database and storage.

    It takes over the in-process bus's `files.events` subscription while it runs; the session's
    app gets it back when it stops."""

    @contextlib.asynccontextmanager
    async def started(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        other = create_app(files_settings(storage_env, **overrides))
        async with (
            other.router.lifespan_context(other),
            asgi_client(other, "http://files-2") as http,
        ):
            yield other, http

    return started


# Users, tasks and uploads.


@pytest.fixture(scope="session")
def directories() -> list[FastAPI]:
    """No waiting for the user.registered event: files asks identity about a caller it does not
    know yet, and no test names a user as an assignee."""
    return []


@pytest.fixture(scope="session")
async def owner(make_user: UserFactory) -> User:
    """Creates the tasks of most tests."""
    return await make_user()


@pytest.fixture(scope="session")
async def stranger(make_user: UserFactory) -> User:
    """Neither uploader nor task creator."""
    return await make_user()


@pytest.fixture
async def task(tasks: httpx.AsyncClient, owner: User) -> dict:
    return await create_task(tasks, owner[1])


def files_url(task_id: str, file_id: str | None = None) -> str:
    return f"/api/tasks/{task_id}/files" + (f"/{file_id}" if file_id else "")


async def upload(
    client: httpx.AsyncClient, task_id: str, headers: dict[str, str], *files: Upload
) -> httpx.Response:
    return await client.post(
        files_url(task_id), headers=headers, files=[("files", item) for item in files]
    )


async def upload_ok(
    client: httpx.AsyncClient, task_id: str, headers: dict[str, str], *files: Upload
) -> list[dict]:
    response = await upload(client, task_id, headers, *files)
    assert response.status_code == 201, response.text
    return response.json()


# Looking inside: the table, the storage, the outbox, the spool folder.


async def storage_key(app: FastAPI, file_id: str) -> str:
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(select(File.storage_key).where(File.id == uuid.UUID(file_id)))


async def rows_of_task(app: FastAPI, task_id: str) -> list[File]:
    async with app.state.database.sessionmaker() as session:
        statement = select(File).where(File.task_id == uuid.UUID(task_id))
        return list(await session.scalars(statement))


async def stored_keys(app: FastAPI, task_id: str) -> list[str]:
    """Every object the storage holds for a task, whatever the table says."""
    storage = app.state.storage
    prefix = f"tasks/{task_id}/"
    if isinstance(storage, LocalStorage):
        folder = storage.root / prefix
        return sorted(
            str(path.relative_to(storage.root)) for path in folder.rglob("*") if path.is_file()
        )
    assert isinstance(storage, S3Storage)
    listing = await asyncio.to_thread(
        storage.client.list_objects_v2, Bucket=storage.bucket, Prefix=prefix
    )
    return sorted(item["Key"] for item in listing.get("Contents", []))


def spooled_files(app: FastAPI) -> list[Path]:
    """What uploads left in the spool folder (should be nothing, whatever happened)."""
    return list(Path(app.state.settings.UPLOAD_SPOOL_DIR).rglob("*"))


async def events_of(app: FastAPI, aggregate_id: str) -> list[dict[str, Any]]:
    async with app.state.database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.routing_key, outbox.c.payload)
                .where(outbox.c.payload["aggregate_id"].astext == aggregate_id)
                .order_by(outbox.c.position)
            )
        ).all()
    return [{"routing_key": row.routing_key, **row.payload} for row in rows]


async def events_of_task(app: FastAPI, task_id: str) -> list[dict[str, Any]]:
    """The outbox rows about any file of one task."""
    async with app.state.database.sessionmaker() as session:
        payloads = await session.scalars(
            select(outbox.c.payload).where(outbox.c.payload["data"]["task_id"].astext == task_id)
        )
        return list(payloads)
