"""Every auth endpoint through the gateway, in both modes."""

import asyncio
import uuid

import aio_pika
import asyncpg
import httpx
import pytest

from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.testing import RABBITMQ_URL, bearer, new_user
from tests.e2e.accounts import E2E_REFRESH_GRACE_SECONDS, register
from tests.e2e.stack import Stack


async def test_register_login_me(api: httpx.AsyncClient) -> None:
    account = await register(api)
    user = account["user"]
    assert set(user) == {
        "id",
        "email",
        "username",
        "full_name",
        "avatar_url",
        "is_active",
        "created_at",
    }
    assert account["token_type"] == "bearer"
    credentials = account["request"]
    login = await api.post(
        "/api/auth/login", json={"email": credentials["email"], "password": credentials["password"]}
    )
    assert login.status_code == 200
    me = await api.get("/api/auth/me", headers=bearer(login.json()["access_token"]))
    assert me.status_code == 200
    assert me.json() == user


async def test_login_with_the_oauth2_form(api: httpx.AsyncClient) -> None:
    account = await register(api)
    credentials = account["request"]
    login = await api.post(
        "/api/auth/login",
        data={"username": credentials["email"], "password": credentials["password"]},
    )
    assert login.status_code == 200
    assert login.json()["user"]["id"] == account["user"]["id"]


async def test_protected_routes_refuse_missing_or_bad_tokens(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/auth/me"),
        ("PUT", "/api/auth/me"),
        ("GET", "/api/auth/users"),
        ("POST", "/api/auth/logout"),
    ]:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = await api.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path)
            body = response.json()
            assert body["detail"] and body["code"] == "not_authenticated" and body["request_id"]


async def test_duplicate_registration_is_409(api: httpx.AsyncClient) -> None:
    account = await register(api)
    again = new_user()
    again["email"] = account["request"]["email"]
    response = await api.post("/api/auth/register", json=again)
    assert response.status_code == 409


async def test_wrong_password_and_unknown_email_give_the_same_401(api: httpx.AsyncClient) -> None:
    account = await register(api)
    wrong = await api.post(
        "/api/auth/login", json={"email": account["request"]["email"], "password": "not-it-at-all"}
    )
    unknown = await api.post(
        "/api/auth/login", json={"email": f"{uuid.uuid4().hex}@example.com", "password": "x" * 9}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("password", "seven77"), ("email", "nope"), ("username", "ab"), ("full_name", "")],
)
async def test_bad_registration_is_422_and_creates_nobody(
    api: httpx.AsyncClient, field: str, value: str
) -> None:
    body = new_user()
    body[field] = value
    response = await api.post("/api/auth/register", json=body)
    assert response.status_code == 422
    # Nothing half-written: the same email registers fine once the input is right.
    fixed = {**body, field: new_user()[field]}
    assert (await api.post("/api/auth/register", json=fixed)).status_code == 201


async def test_update_me_and_user_list(api: httpx.AsyncClient) -> None:
    account = await register(api)
    other = await register(api)
    headers = bearer(account["access_token"])
    updated = await api.put("/api/auth/me", headers=headers, json={"full_name": "Renamed"})
    assert updated.status_code == 200
    assert updated.json()["full_name"] == "Renamed"
    assert (
        await api.put("/api/auth/me", headers=headers, json={"full_name": ""})
    ).status_code == 422
    users = (await api.get("/api/auth/users", headers=headers)).json()
    by_id = {user["id"]: user for user in users}
    assert by_id[account["user"]["id"]]["full_name"] == "Renamed"
    assert by_id[other["user"]["id"]]["email"] is None


async def test_refresh_rotation_and_reuse_detection(api: httpx.AsyncClient) -> None:
    account = await register(api)
    rotated = await api.post("/api/auth/refresh", json={"refresh_token": account["refresh_token"]})
    assert rotated.status_code == 200
    newest = rotated.json()["refresh_token"]
    # At once, it is a second tab: the same pair. Past the grace (1 s here), a reuse.
    second_tab = await api.post(
        "/api/auth/refresh", json={"refresh_token": account["refresh_token"]}
    )
    assert second_tab.json() == rotated.json()
    assert (
        await api.get("/api/auth/me", headers=bearer(rotated.json()["access_token"]))
    ).status_code == 200
    await asyncio.sleep(E2E_REFRESH_GRACE_SECONDS + 0.5)
    replay = await api.post("/api/auth/refresh", json={"refresh_token": account["refresh_token"]})
    assert replay.status_code == 401
    assert (await api.post("/api/auth/refresh", json={"refresh_token": newest})).status_code == 401
    # The family's access token is denied too, in identity and behind the gateway elsewhere.
    for path in ("/api/auth/me", "/api/tasks"):
        denied = await api.get(path, headers=bearer(rotated.json()["access_token"]))
        assert denied.status_code == 401, path


async def test_logout_revokes_the_refresh_token(api: httpx.AsyncClient) -> None:
    account = await register(api)
    response = await api.post(
        "/api/auth/logout",
        headers=bearer(account["access_token"]),
        json={"refresh_token": account["refresh_token"]},
    )
    assert response.status_code == 204
    refresh = await api.post("/api/auth/refresh", json={"refresh_token": account["refresh_token"]})
    assert refresh.status_code == 401


async def test_logout_denies_the_access_token_in_every_service(api: httpx.AsyncClient) -> None:
    account = await register(api)
    headers = bearer(account["access_token"])
    # Each service (and the gateway) has verified and cached the token before the logout.
    task = await api.post("/api/tasks", headers=headers, json={"title": "before logout"})
    assert task.status_code == 201
    comments = f"/api/tasks/{task.json()['id']}/comments"
    assert (await api.get(comments, headers=headers)).status_code == 200
    assert (await api.get("/api/auth/me", headers=headers)).status_code == 200
    response = await api.post("/api/auth/logout", headers=headers)
    assert response.status_code == 204
    for path in ("/api/tasks", comments, "/api/auth/me"):
        assert (await api.get(path, headers=headers)).status_code == 401, path


async def test_login_is_rate_limited_per_ip(api: httpx.AsyncClient) -> None:
    body = {"email": "nobody@example.com", "password": "whatever1"}
    statuses = [(await api.post("/api/auth/login", json=body)).status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    limited = await api.post("/api/auth/login", json=body)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0


async def test_openapi_holds_identity_routes(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    for path in (
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/me",
        "/api/auth/users",
        "/api/auth/refresh",
        "/api/auth/logout",
    ):
        assert path in document["paths"], path
    assert (await api.get("/docs")).status_code == 200


async def test_health_and_internal_routes(api: httpx.AsyncClient) -> None:
    health = (await api.get("/api/health")).json()
    assert health["status"] == "ok"
    assert health["services"]["identity"]["status"] == "ok"
    assert (await api.get("/internal/anything")).status_code == 404


async def wait_until_published(stack: Stack, user_id: str) -> None:
    connection = await asyncpg.connect(**stack.database_address())
    try:
        async with asyncio.timeout(15):
            while not await connection.fetchval(
                "SELECT sent_at IS NOT NULL FROM identity.outbox"
                " WHERE routing_key = 'user.registered' AND payload->>'aggregate_id' = $1",
                user_id,
            ):
                await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def test_registration_event_is_published(api: httpx.AsyncClient, stack: Stack) -> None:
    """The outbox row is marked sent once the bus took it; in the distributed mode the event is
    on RabbitMQ's exchange with the envelope of docs/events.md."""
    if stack.mode == "compose":
        pytest.skip("the compose stack's PostgreSQL and RabbitMQ are not published")
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "user.registered")
        account = await register(api)
        await wait_until_published(stack, account["user"]["id"])
        on_broker = []
        async with asyncio.timeout(5):
            while message := await queue.get(fail=False):
                await message.ack()
                on_broker.append(EventEnvelope.model_validate_json(message.body))
    mine = [event for event in on_broker if str(event.aggregate_id) == account["user"]["id"]]
    if stack.mode == "distributed":
        assert [event.type for event in mine] == ["user.registered"]
        assert mine[0].producer == "identity"
        assert mine[0].data["username"] == account["request"]["username"]
    else:
        assert mine == [], "the embedded mode keeps its events in-process"
