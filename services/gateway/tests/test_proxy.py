"""The gateway in front of real upstreams: identity in-process, an echo service over real HTTP."""

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from gateway.upstreams import Upstream
from taskhub_common.testing import bearer, new_user

from .echo_upstream import echo_app, free_port, serve


@pytest.fixture(scope="session")
def echo() -> FastAPI:
    return echo_app()


@pytest.fixture(scope="session")
async def echo_url(echo: FastAPI) -> AsyncIterator[str]:
    async for url in serve(echo):
        yield url


@pytest.fixture
def extra_upstreams(echo_url: str) -> list[Upstream]:
    return [
        Upstream("echo", echo_url, ("/api/echo/", "/api/slow/", "/api/cookies"), ""),
        Upstream("down", f"http://127.0.0.1:{free_port()}", ("/api/down/",), ""),
    ]


async def token_for(client) -> str:
    response = await client.post("/api/auth/register", json=new_user())
    assert response.status_code == 201, response.text
    return response.json()["access_token"]


async def test_anonymous_call_is_refused_before_reaching_the_service(
    make_gateway, client_for, extra_upstreams, echo
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        hits = echo.state.hits
        for headers in ({}, {"Authorization": "Bearer forged.token.here"}):
            response = await client.get("/api/echo/x", headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == "not_authenticated"
        assert echo.state.hits == hits


async def test_proxied_request_carries_context_and_no_spoofed_headers(
    make_gateway, client_for, extra_upstreams
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app, "203.0.113.9") as client:
        token = await token_for(client)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = await client.post(
            "/api/echo/a/b?x=1&y=two",
            headers={
                **bearer(token),
                "X-Request-ID": "req-123",
                "traceparent": traceparent,
                "X-User-Id": "someone-else",
                "Connection": "keep-alive, x-secret",
                "Keep-Alive": "timeout=5",
            },
            json={"hello": "world"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    seen = response.json()
    assert seen["path"] == "/api/echo/a/b"
    assert seen["query"] == "x=1&y=two"
    headers = seen["headers"]
    assert headers["x-request-id"] == "req-123"
    assert headers["traceparent"] == traceparent
    assert headers["x-forwarded-for"] == "203.0.113.9"
    assert headers["authorization"] == f"Bearer {token}"
    assert "x-user-id" not in headers
    assert "keep-alive" not in headers


async def test_large_body_is_streamed_through(make_gateway, client_for, extra_upstreams) -> None:
    size = 5 * 1024 * 1024
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)

        async def body():
            for _ in range(size // 65536):
                yield b"x" * 65536

        response = await client.post("/api/echo/upload", headers=bearer(token), content=body())
    assert response.status_code == 200
    assert response.json()["body_size"] == size


async def test_repeated_response_headers_survive(make_gateway, client_for, extra_upstreams) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        response = await client.get("/api/cookies", headers=bearer(token))
    assert response.headers.get_list("set-cookie") == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]


async def test_service_down_is_503_with_error_body(
    make_gateway, client_for, extra_upstreams
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        response = await client.get("/api/down/anything", headers=bearer(token))
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "unavailable"
    assert "down" in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_slow_service_is_504(make_gateway, client_for, extra_upstreams) -> None:
    async with (
        make_gateway(extra_upstreams, UPSTREAM_TIMEOUT=0.3) as app,
        client_for(app) as client,
    ):
        token = await token_for(client)
        response = await client.get("/api/slow/2", headers=bearer(token))
        fast = await client.get("/api/slow/0", headers=bearer(token))
    assert response.status_code == 504
    assert response.json()["code"] == "timeout"
    assert fast.status_code == 200


@pytest.mark.parametrize("path", ["/internal/users", "/api/internal/users", "/api/nothing-here"])
async def test_internal_and_unknown_paths_are_not_routed(
    make_gateway, client_for, extra_upstreams, path
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        response = await client.get(path, headers=bearer(token))
    assert response.status_code == 404


async def test_health_reports_every_service(make_gateway, client_for, extra_upstreams) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        response = await client.get("/api/health")
    body = response.json()
    assert body["name"] == "TaskHub"
    assert body["services"]["identity"]["status"] == "ok"
    assert body["services"]["echo"]["status"] == "ok"
    assert body["services"]["down"]["status"] == "down"
    assert body["status"] == "degraded"


async def test_cors_follows_cors_origins(make_gateway, client_for) -> None:
    async with (
        make_gateway(CORS_ORIGINS="https://app.example.com") as app,
        client_for(app) as client,
    ):
        allowed = await client.options(
            "/api/auth/me",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"},
        )
        refused = await client.options(
            "/api/auth/me",
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
        )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in refused.headers


async def test_merged_openapi_holds_identity_routes_with_resolvable_refs(
    make_gateway, client_for, extra_upstreams
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
        redoc = await client.get("/redoc")
    assert {"/api/auth/register", "/api/auth/login", "/api/auth/me", "/api/health"} <= set(
        document["paths"]
    )
    assert "identity.UserOut" in document["components"]["schemas"]
    schemas = document["components"]["schemas"]
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"].removeprefix("#/components/schemas/"))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert refs and refs <= set(schemas)
    assert docs.status_code == redoc.status_code == 200
    assert "/openapi.json" in docs.text
