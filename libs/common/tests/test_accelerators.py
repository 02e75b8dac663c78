"""Optional packages whose absence costs speed without any error.

httpcore, anyio and uvicorn each try an import and quietly fall back when it fails: httpcore asks
sniffio which async library runs on every request it sends, and without sniffio that is a failed
import, a full search of sys.path, each time (a quarter of the gateway's CPU once). These tests
fail when such a package is missing from the locked environment, or when any per-request import
attempt appears again.
"""

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator

import pytest

from taskhub_common.http import make_http_client

ACCELERATORS = {
    "sniffio": "httpcore and anyio: which async library runs, asked per request",
    "uvloop": "uvicorn's event loop (asyncio's own otherwise)",
    "httptools": "uvicorn's HTTP parser (h11, pure Python, otherwise)",
    "hiredis": "redis-py's reply parser (pure Python otherwise)",
}


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_accelerator_is_installed(name: str) -> None:
    assert importlib.util.find_spec(name) is not None, f"{name} missing: {ACCELERATORS[name]}"


class ImportAttempts:
    """A meta path finder that records every module Python goes looking for: a module already
    imported is found in sys.modules and never gets here; a missing one gets here every time."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.names.append(name)
        return None


@pytest.fixture
async def http_server() -> AsyncIterator[str]:
    """A real HTTP/1.1 server on loopback answering every request with a small JSON body."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"ok": true}'
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_an_upstream_request_imports_nothing(http_server: str) -> None:
    async with make_http_client(http_server) as client:
        await client.get("/")  # the first request may import what it needs, once
        attempts = ImportAttempts()
        sys.meta_path.insert(0, attempts)
        try:
            for _ in range(5):
                assert (await client.get("/")).json() == {"ok": True}
        finally:
            sys.meta_path.remove(attempts)
    assert attempts.names == []
