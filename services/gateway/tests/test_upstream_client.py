"""The gateway's upstream client on its own, against real servers: keep-alive, and a kept-alive
connection the service closed."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.upstream_client import HttpUpstream, UpstreamError

from .echo_upstream import echo_app, free_port, serve

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    async for url in serve(echo_app()):
        yield url


async def test_connections_are_kept_alive_and_reused(echo_url: str) -> None:
    client = HttpUpstream(echo_url, timeout=5, connect_timeout=2)
    first = await client.send("GET", "/api/echo/one", b"a=1", [(b"x-test", b"1")])
    assert first.status == 200
    assert b'"query":"a=1"' in await first.read()
    (connection,) = client.idle
    second = await client.send("POST", "/api/echo/two", b"", [], b"body")
    assert b'"body_size":4' in await second.read()
    assert client.idle == [connection]
    await client.aclose()


async def test_the_answer_to_a_head_ends_with_its_head(echo_url: str) -> None:
    """It announces a length but has no body: waiting for one would time out."""
    client = HttpUpstream(echo_url, timeout=2, connect_timeout=2)
    head = await client.send("HEAD", "/api/echo/one", b"", [])
    assert head.status == 405  # the echo routes no HEAD; its answer says how long a GET's is
    assert head.header(b"content-length") not in (None, "0")
    assert await head.read() == b""
    after = await client.send("GET", "/api/echo/two", b"", [])
    assert b'"path":"/api/echo/two"' in await after.read()
    await client.aclose()


async def test_a_kept_alive_connection_the_service_closed_is_not_used_again() -> None:
    """A server that answers each request and then closes the connection without saying so, as
    uvicorn does when its keep-alive runs out: every request still gets its answer."""
    connections = 0

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HttpUpstream(f"http://127.0.0.1:{port}", timeout=5, connect_timeout=2)
    try:
        for _ in range(3):
            response = await client.send("GET", "/x", b"", [])
            assert (response.status, await response.read()) == (200, b"ok")
        assert connections == 3
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_a_service_that_is_not_listening_is_an_upstream_error() -> None:
    client = HttpUpstream(f"http://127.0.0.1:{free_port()}", timeout=5, connect_timeout=2)
    with pytest.raises(UpstreamError):
        await client.send("GET", "/x", b"", [])


async def test_a_streamed_body_keeps_its_declared_length_or_goes_chunked(echo_url: str) -> None:
    client = HttpUpstream(echo_url, timeout=5, connect_timeout=2)

    async def body():
        for _ in range(4):
            yield b"z" * 1000

    declared = [(b"content-length", b"4000"), (b"x-note", b"transfer-encoding: chunked")]
    for headers in (declared, []):
        response = await client.send("POST", "/api/echo/up", b"", headers, body())
        assert b'"body_size":4000' in await response.read()
    await client.aclose()
