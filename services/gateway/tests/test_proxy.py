"""The gateway in front of real upstreams: identity in-process, an echo service over real HTTP."""

import re
from collections.abc import AsyncIterator

import pytest
from fastapi import APIRouter, FastAPI

from gateway.app import bearer_token, install_pass_through
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstream
from taskhub_common.testing import bearer, new_user

from .echo_upstream import echo_app, free_port, serve, task_service_app


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
        Upstream("echo", echo_url, ("/api/echo/", "/api/slow/", "/api/big/", "/api/cookies"), ""),
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


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ([], None),
        ([(b"authorization", b"Bearer abc.def")], "abc.def"),
        ([(b"authorization", b"bearer abc.def")], "abc.def"),  # the scheme is case-blind
        ([(b"authorization", b"Basic dXNlcjpwdw==")], None),
        ([(b"authorization", b"Bearer")], ""),
        # The first Authorization header counts, as Starlette's headers read it.
        ([(b"authorization", b"Basic x"), (b"authorization", b"Bearer abc")], None),
        ([(b"x-authorization", b"Bearer abc")], None),
    ],
)
def test_the_bearer_token_is_read_from_the_first_authorization_header(headers, token) -> None:
    assert bearer_token(headers) == token


async def test_a_revoked_token_is_refused_by_the_service_it_reaches(
    make_gateway, client_for
) -> None:
    """The pass-through leaves the deny list to the owning service (decision 0046): after a
    logout, the token the gateway remembers as valid is refused all the same."""
    async with make_gateway() as app, client_for(app) as client:
        token = await token_for(client)
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200
        assert (await client.post("/api/auth/logout", headers=bearer(token))).status_code == 204
        response = await client.get("/api/auth/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


async def test_a_method_a_path_does_not_take_is_answered_by_whoever_owns_the_path(
    make_gateway, client_for, extra_upstreams, echo
) -> None:
    """Every method is forwarded: the owning service says which ones a path takes (405 and
    `Allow`); on the gateway's own paths, the gateway says it."""
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        hits = echo.state.hits
        answers = [
            await client.request(method, "/api/echo/x", headers=bearer(token))
            for method in ("OPTIONS", "PATCH", "HEAD")
        ]
        own = await client.put("/api/health", headers=bearer(token))
        login = await client.get("/api/auth/login")
    for response in answers:
        assert response.status_code == 405, (response.request.method, response.text)
        assert set(response.headers["allow"].split(", ")) == {"GET", "POST", "PUT", "DELETE"}
    assert echo.state.hits == hits  # the service's router refused them; its route never ran
    assert (own.status_code, own.headers["allow"]) == (405, "GET")
    assert (login.status_code, login.headers["allow"]) == (405, "POST")


def test_the_gateway_s_own_api_routes_must_be_fixed_paths() -> None:
    """Under a template, an own route would be hidden behind the pass-through."""
    app, router = FastAPI(), APIRouter()

    @router.get("/api/own/{name}")
    async def own(name: str) -> str:
        return name

    app.include_router(router)
    with pytest.raises(RuntimeError, match="fixed paths"):
        install_pass_through(app, GatewaySettings())


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
# A client's request id and trace context, and headers only the gateway may set or that end
# at the first hop.
SPOOFING_HEADERS = {
    "X-Request-ID": "req-123",
    "traceparent": TRACEPARENT,
    "X-User-Id": "someone-else",
    "Connection": "keep-alive, x-secret",
    "Keep-Alive": "timeout=5",
    "Forwarded": "for=6.6.6.6",
    "X-Real-IP": "6.6.6.6",
}


def assert_handed_only_the_gateway_s_headers(headers: dict[str, str], token: str) -> None:
    """What a service saw of a request sent with SPOOFING_HEADERS from 203.0.113.9."""
    assert headers["x-request-id"] == "req-123"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["x-forwarded-for"] == "203.0.113.9"
    assert headers["authorization"] == f"Bearer {token}"
    assert "x-user-id" not in headers
    assert "keep-alive" not in headers
    assert "forwarded" not in headers and "x-real-ip" not in headers


async def test_proxied_request_carries_context_and_no_spoofed_headers(
    make_gateway, client_for, extra_upstreams
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app, "203.0.113.9") as client:
        token = await token_for(client)
        response = await client.post(
            "/api/echo/a/b?x=1&y=two",
            headers={**bearer(token), **SPOOFING_HEADERS},
            json={"hello": "world"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    seen = response.json()
    assert seen["path"] == "/api/echo/a/b"
    assert seen["query"] == "x=1&y=two"
    assert_handed_only_the_gateway_s_headers(seen["headers"], token)


async def test_a_header_value_that_is_not_ascii_is_forwarded_as_sent(
    make_gateway, client_for, extra_upstreams
) -> None:
    """Such a value (an Idempotency-Key of Latin-1 bytes, found by schemathesis) was a 500."""
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        response = await client.delete(
            "/api/echo/x", headers={**bearer(token), "X-Note": b"caf\xe9 \xff"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["headers"]["x-note"] == "caf\xe9 \xff"


async def test_large_body_is_streamed_through(make_gateway, client_for, extra_upstreams) -> None:
    size = 5 * 1024 * 1024
    async with (
        make_gateway(extra_upstreams, MAX_JSON_BODY=2 * size) as app,
        client_for(app) as client,
    ):
        token = await token_for(client)

        async def body():
            for _ in range(size // 65536):
                yield b"x" * 65536

        response = await client.post("/api/echo/upload", headers=bearer(token), content=body())
    assert response.status_code == 200
    assert response.json()["body_size"] == size


async def test_small_answers_are_sent_whole_and_large_ones_streamed(
    make_gateway, client_for, extra_upstreams
) -> None:
    size = 3 * 1024 * 1024  # above BUFFER_BODY_BYTES
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        small = await client.get("/api/echo/small", headers=bearer(token))
        large = await client.get(f"/api/big/{size}", headers=bearer(token))
    assert small.status_code == 200
    assert int(small.headers["content-length"]) == len(small.content)
    assert small.json()["path"] == "/api/echo/small"
    assert large.status_code == 200
    assert "content-length" not in large.headers
    assert large.content == b"y" * size


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
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["code"] == "unavailable"
    assert "down" in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]


async def test_slow_service_is_504(make_gateway, client_for, extra_upstreams) -> None:
    async with (
        # Half the slow call's 2 s, and room for the fast one on a loaded machine.
        make_gateway(extra_upstreams, UPSTREAM_TIMEOUT=1.0) as app,
        client_for(app) as client,
    ):
        token = await token_for(client)
        response = await client.get("/api/slow/2", headers=bearer(token))
        fast = await client.get("/api/slow/0", headers=bearer(token))
    assert response.status_code == 504
    assert response.json()["code"] == "timeout"
    assert fast.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/internal/users",
        "/api/internal/users",
        "/api/nothing-here",
        "/api/echo/../../internal/users",
        "/api/echo/%2e%2e/%2e%2e/internal/users",
        "/api/echo/..%2F..%2Finternal/users",
        "/api/auth/%2e%2e/%2e%2e/openapi.json",
        "/api/echo/%2e/x",
        "/api/echo/x%00y",
        "/api/echo/x%7Fy",
        "/api/echo/x/%2e%2e",
    ],
)
async def test_internal_unknown_and_dot_segment_paths_are_not_routed(
    make_gateway, client_for, extra_upstreams, echo, path
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        hits = echo.state.hits
        response = await client.get(path, headers=bearer(token))
    assert response.status_code == 404
    assert echo.state.hits == hits


async def test_login_limit_cannot_be_dodged_with_dot_segments(make_gateway, client_for) -> None:
    async with make_gateway(RATE_LIMIT_AUTH="2/minute") as app, client_for(app) as client:
        body = {"email": "x@example.com", "password": "wrong-password"}
        statuses = [
            (await client.post(path, json=body)).status_code
            for path in ("/api/auth/login", "/api/auth/login", "/api/auth/x/%2e%2e/login")
        ]
    assert statuses == [401, 401, 404]


async def test_trailing_slash_reaches_the_route(make_gateway, client_for, extra_upstreams) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        token = await token_for(client)
        me = await client.get("/api/auth/me/", headers=bearer(token))
        echoed = await client.get("/api/echo/a/", headers=bearer(token))
    assert me.status_code == 200
    assert echoed.json()["path"] == "/api/echo/a"


async def test_cookies_set_by_a_service_never_reach_another_user(
    make_gateway, client_for, extra_upstreams
) -> None:
    async with make_gateway(extra_upstreams) as app, client_for(app) as client:
        first, second = await token_for(client), await token_for(client)
        await client.get("/api/cookies", headers=bearer(first))
        client.cookies.clear()
        seen = (await client.get("/api/echo/who", headers=bearer(second))).json()
    assert "cookie" not in seen["headers"]


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
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in refused.headers


async def test_an_answer_without_origin_varies_on_it_beside_the_service_s_own_vary(
    make_gateway, client_for, extra_upstreams
) -> None:
    """No CORS headers for a call without Origin, but `Vary: Origin`, so that a cache keeps it
    apart from the answers to cross-origin calls (the gateway's short way for such calls)."""
    origin = "https://app.example.com"
    async with make_gateway(extra_upstreams, CORS_ORIGINS=origin) as app, client_for(app) as client:
        token = await token_for(client)
        plain = await client.get("/api/echo/x", headers=bearer(token))
        cross = await client.get("/api/echo/x", headers={**bearer(token), "Origin": origin})
    assert plain.status_code == cross.status_code == 200
    for response in (plain, cross):
        varies = [name.strip() for name in ",".join(response.headers.get_list("vary")).split(",")]
        assert varies == ["Accept-Language", "Origin"]
    assert "access-control-allow-origin" not in plain.headers
    assert cross.headers["access-control-allow-origin"] == origin


async def test_cors_wildcard_never_allows_credentials(make_gateway, client_for) -> None:
    async with make_gateway(CORS_ORIGINS="*") as app, client_for(app) as client:
        response = await client.options(
            "/api/auth/me",
            headers={"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"},
        )
    assert "access-control-allow-credentials" not in response.headers


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
    # Error statuses, each with the error body's schema: the generic ones on every route...
    paths = document["paths"]
    register = paths["/api/auth/register"]["post"]["responses"]
    me = paths["/api/auth/me"]["get"]["responses"]
    assert {"409", "413", "422", "429", "431", "503"} <= set(register)
    assert "401" not in register  # public
    assert {"401", "422", "429", "503"} <= set(me)
    assert "401" in paths["/api/auth/login"]["post"]["responses"]  # a wrong password
    for response in (register["413"], register["422"], me["401"], me["503"]):
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    assert "retry-after" in {name.lower() for name in me["503"]["headers"]}
    # ...and the route's own (409 is identity's, with identity's copy of the schema).
    assert register["409"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
    assert "/openapi.json" in docs.text


@pytest.fixture(scope="session")
def task_parts_app() -> FastAPI:
    return task_service_app()


@pytest.fixture(scope="session")
async def task_parts_url(task_parts_app: FastAPI) -> AsyncIterator[str]:
    async for url in serve(task_parts_app):
        yield url


async def test_nested_paths_go_to_the_owning_service(
    make_gateway, client_for, task_parts_url, echo_url
) -> None:
    table = [
        Upstream("tasks", echo_url, ("/api/tasks/",), ""),
        Upstream(
            "comments", task_parts_url, (), "", (re.compile(r"/api/tasks/[^/]+/comments(/.*)?"),)
        ),
    ]
    async with make_gateway(table) as app, client_for(app) as client:
        token = await token_for(client)
        nested = await client.get("/api/tasks/42/comments", headers=bearer(token))
    assert nested.json() == [{"id": "comments-1", "task_id": "42"}]


def one_server_for_tasks_and_parts(url: str) -> list[Upstream]:
    return [
        Upstream(name, url, ("/api/tasks/",) if name == "tasks" else (), "")
        for name in ("tasks", "comments", "files")
    ]


async def test_a_task_is_composed_with_its_comments_and_files(
    make_gateway, client_for, task_parts_url
) -> None:
    table = one_server_for_tasks_and_parts(task_parts_url)
    async with make_gateway(table) as app, client_for(app) as client:
        token = await token_for(client)
        # A body on a GET must not leak its Content-Length into the gateway's own calls.
        composed = await client.request(
            "GET", "/api/tasks/7", headers=bearer(token), json={"ignored": True}
        )
        missing = await client.get("/api/tasks/missing", headers=bearer(token))
        anonymous = await client.get("/api/tasks/7")
    assert composed.status_code == 200
    assert composed.json()["comments"] == [{"id": "comments-1", "task_id": "7"}]
    assert composed.json()["files"] == [{"id": "files-1", "task_id": "7"}]
    assert "x-missing-parts" not in composed.headers
    assert missing.status_code == 404
    assert anonymous.status_code == 401


async def test_a_task_s_parts_are_served_from_cache_until_their_service_writes(
    make_gateway, client_for, task_parts_app, task_parts_url
) -> None:
    table = one_server_for_tasks_and_parts(task_parts_url)
    async with make_gateway(table) as app, client_for(app) as client:
        token = await token_for(client)
        calls = task_parts_app.state.part_calls
        first = await client.get("/api/tasks/9", headers=bearer(token))
        asked = len(calls)
        again = await client.get("/api/tasks/9", headers=bearer(token))
        assert len(calls) == asked  # both parts from the cache
        # What comments does after a write commits: its generation moves on.
        await app.state.task_part_caches["comments"].invalidate()
        after_write = await client.get("/api/tasks/9", headers=bearer(token))
        anonymous = await client.get("/api/tasks/9")
    assert first.json() == again.json() == after_write.json()
    assert first.json()["comments"] == [{"id": "comments-1", "task_id": "9"}]
    assert [part for part, _ in calls[asked:]] == ["comments"]
    assert anonymous.status_code == 401


async def test_a_task_is_served_when_a_part_is_down(
    make_gateway, client_for, task_parts_url
) -> None:
    async for broken_url in serve(task_service_app(comments_status=503)):
        table = [
            Upstream("tasks", task_parts_url, ("/api/tasks/",), ""),
            Upstream("comments", broken_url, (), ""),
            Upstream("files", f"http://127.0.0.1:{free_port()}", (), ""),
        ]
        async with make_gateway(table) as app, client_for(app) as client:
            token = await token_for(client)
            composed = await client.get("/api/tasks/7", headers=bearer(token))
        assert composed.status_code == 200
        assert composed.json()["title"] == "composed"
        assert composed.json()["comments"] == [] and composed.json()["files"] == []
        assert composed.headers["x-missing-parts"] == "comments,files"


async def test_a_body_over_the_limit_is_413_and_never_reaches_the_upstream(
    make_gateway, client_for, extra_upstreams, echo
) -> None:
    async with (
        make_gateway(extra_upstreams, MAX_JSON_BODY=256 * 1024) as app,
        client_for(app) as client,
    ):
        token = await token_for(client)
        hits = echo.state.hits
        sent = 0

        async def body():
            nonlocal sent
            for _ in range(1024):  # 64 MiB, chunked: no Content-Length to refuse up front
                sent += 65536
                yield b"x" * 65536

        streamed = await client.post("/api/echo/upload", headers=bearer(token), content=body())
        declared = await client.post(
            "/api/echo/upload", headers=bearer(token), content=b"x" * (256 * 1024 + 1)
        )
        login = await client.post(
            "/api/auth/login", json={"email": "a@example.com", "password": "p" * 300_000}
        )
    for response in (streamed, declared, login):
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"
        assert response.headers["connection"] == "close"
    # The stream was given up soon after the limit, and the upstream call with it (the echo
    # saw the client leave); the declared one never left the gateway.
    assert sent < 2 * 1024 * 1024
    assert echo.state.hits == hits + 1


async def test_too_many_or_too_large_headers_are_431(make_gateway, client_for) -> None:
    async with make_gateway() as app, client_for(app) as client:
        many = await client.get("/api/health", headers={f"x-h-{n}": "1" for n in range(10_000)})
        large = await client.get("/api/health", headers={"x-h": "y" * 40_000})
        fine = await client.get("/api/health")
    assert many.status_code == 431
    assert large.status_code == 431
    assert many.json()["code"] == "headers_too_large"
    assert fine.status_code == 200
