"""Identity's endpoints, in-process on a real PostgreSQL."""

import httpx
import jwt
import pytest
from sqlalchemy import select, text

from identity.app import create_app
from identity.settings import IdentitySettings
from taskhub_common.outbox import outbox
from taskhub_common.testing import bearer, new_user

from .conftest import SUITE, spend_before_the_grace


async def test_register_returns_token_and_user(client: httpx.AsyncClient) -> None:
    body = new_user()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201
    data = response.json()
    assert data["token_type"] == "bearer"
    assert data["refresh_token"]
    assert data["user"]["email"] == body["email"]
    assert data["user"]["username"] == body["username"]
    assert data["user"]["is_active"] is True
    assert "password" not in response.text and "hashed" not in response.text


async def test_register_normalises_email_case(client: httpx.AsyncClient) -> None:
    body = new_user()
    body["email"] = body["email"].upper()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201
    assert response.json()["user"]["email"] == body["email"].lower()


@pytest.mark.parametrize("field", ["email", "username"])
async def test_register_duplicate_is_409(client: httpx.AsyncClient, registered, field) -> None:
    body = new_user()
    taken = registered["request"][field]
    body[field] = taken.upper() if field == "email" else taken.swapcase()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "short7!"),
        ("email", "not-an-email"),
        ("username", "ab"),
        ("username", "x" * 101),
        ("full_name", ""),
        ("username", "has space"),
    ],
)
async def test_register_bad_input_is_422_and_writes_nothing(
    app, client: httpx.AsyncClient, field, value
) -> None:
    body = new_user()
    body[field] = value
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field
    async with app.state.database.sessionmaker() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM users WHERE username = :u"), {"u": body["username"]}
        )
    assert count == 0


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("12345678", "common"),  # the finding: accepted before
        ("Password1", "common"),
        ("QWERTYUIOP", "common"),
        ("iloveyou", "common"),
        ("{username}", "own"),
        ("{username}!2024", "own"),
        ("My-{local}-pass", "own"),
        ("{email}", "own"),
        ("{full_name}", "own"),
    ],
)
async def test_a_common_or_own_name_password_is_422(
    app, client: httpx.AsyncClient, password, why
) -> None:
    body = new_user()
    local = body["email"].split("@")[0]
    body["password"] = password.format(local=local, **body).upper()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "password"]
    assert ("common" if why == "common" else "your email, username or name") in error["msg"]
    async with app.state.database.sessionmaker() as session:
        count = await session.scalar(
            text("SELECT count(*) FROM users WHERE username = :u"), {"u": body["username"]}
        )
    assert count == 0


async def test_register_publishes_user_registered_once(app, client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/register", json=new_user())
    user_id = response.json()["user"]["id"]
    async with app.state.database.sessionmaker() as session:
        rows = (
            await session.execute(
                select(outbox.c.routing_key, outbox.c.payload).where(
                    outbox.c.payload["aggregate_id"].astext == user_id
                )
            )
        ).all()
    assert [row.routing_key for row in rows] == ["user.registered"]
    envelope = rows[0].payload
    assert envelope["type"] == "user.registered"
    assert envelope["producer"] == "identity"
    assert envelope["actor_id"] == user_id
    assert envelope["version"] == 1
    assert envelope["data"]["username"] == response.json()["user"]["username"]
    assert "hashed_password" not in envelope["data"]


async def test_login_json_and_form(client: httpx.AsyncClient, registered) -> None:
    credentials = registered["request"]
    as_json = await client.post(
        "/api/auth/login", json={"email": credentials["email"], "password": credentials["password"]}
    )
    assert as_json.status_code == 200
    as_form = await client.post(
        "/api/auth/login",
        data={"username": credentials["email"].upper(), "password": credentials["password"]},
    )
    assert as_form.status_code == 200
    assert as_form.json()["user"]["id"] == registered["user"]["id"]


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, registered
) -> None:
    wrong = await client.post(
        "/api/auth/login", json={"email": registered["request"]["email"], "password": "nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_login_without_fields_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/auth/login", json={"email": "a@b.c"})).status_code == 422
    assert (await client.post("/api/auth/login", content=b"{not json")).status_code == 422
    assert (await client.post("/api/auth/login", data={"username": "a@b.c"})).status_code == 422


async def test_me_with_token(client: httpx.AsyncClient, registered) -> None:
    response = await client.get("/api/auth/me", headers=bearer(registered["access_token"]))
    assert response.status_code == 200
    assert response.json() == registered["user"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
async def test_me_without_valid_token_is_401(client: httpx.AsyncClient, headers) -> None:
    response = await client.get("/api/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_access_token_claims(client: httpx.AsyncClient, registered) -> None:
    token = registered["access_token"]
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    assert all("d" not in key for key in jwks["keys"]), "the JWKS must hold no private part"
    assert set(claims) >= {"sub", "iat", "exp", "jti", "aud", "iss"}
    assert claims["sub"] == registered["user"]["id"]


async def test_token_signed_by_another_key_is_401(client: httpx.AsyncClient, registered) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    real = jwt.decode(registered["access_token"], options={"verify_signature": False})
    kid = jwt.get_unverified_header(registered["access_token"])["kid"]
    forged = jwt.encode(
        real, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    assert (await client.get("/api/auth/me", headers=bearer(forged))).status_code == 401
    unsigned = jwt.encode(real, None, algorithm="none", headers={"kid": kid})
    assert (await client.get("/api/auth/me", headers=bearer(unsigned))).status_code == 401


async def test_update_me(app, client: httpx.AsyncClient, registered) -> None:
    headers = bearer(registered["access_token"])
    response = await client.put(
        "/api/auth/me",
        headers=headers,
        json={"full_name": "New Name", "avatar_url": "https://example.com/a.png"},
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "New Name"
    assert response.json()["avatar_url"] == "https://example.com/a.png"
    cleared = await client.put("/api/auth/me", headers=headers, json={"avatar_url": None})
    assert cleared.json()["avatar_url"] is None
    assert cleared.json()["full_name"] == "New Name"
    async with app.state.database.sessionmaker() as session:
        changes = (
            await session.scalars(
                select(outbox.c.payload["data"]["changes"])
                .where(
                    outbox.c.routing_key == "user.updated",
                    outbox.c.payload["aggregate_id"].astext == registered["user"]["id"],
                )
                # Marking a row sent rewrites it: only `position` keeps the order of writes.
                .order_by(outbox.c.position)
            )
        ).all()
    assert changes == [
        {"full_name": "New Name", "avatar_url": "https://example.com/a.png"},
        {"avatar_url": None},
    ]


async def test_me_is_cached_until_the_user_changes(
    app, client: httpx.AsyncClient, registered
) -> None:
    """GET /me is answered from the profile cache: a change made in the database alone is not
    seen (until PROFILE_CACHE_SECONDS), one made through PUT /me is, at once."""
    headers = bearer(registered["access_token"])
    first = await client.get("/api/auth/me", headers=headers)
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(
            text("UPDATE users SET full_name = 'Set Behind' WHERE id = :id"),
            {"id": registered["user"]["id"]},
        )
    assert (await client.get("/api/auth/me", headers=headers)).json() == first.json()
    change = {"avatar_url": "https://example.com/b.png"}
    response = await client.put("/api/auth/me", headers=headers, json=change)
    assert response.status_code == 200
    me = (await client.get("/api/auth/me", headers=headers)).json()
    assert me == response.json()
    assert me["full_name"] == "Set Behind"
    # Another user's profile is cached apart.
    other = (await client.post("/api/auth/register", json=new_user())).json()
    answer = await client.get("/api/auth/me", headers=bearer(other["access_token"]))
    assert answer.json() == other["user"]


@pytest.mark.parametrize(
    "body", [{"full_name": ""}, {"full_name": None}, {"email": "x@example.com"}]
)
async def test_update_me_bad_input_is_422(client: httpx.AsyncClient, registered, body) -> None:
    headers = bearer(registered["access_token"])
    response = await client.put("/api/auth/me", headers=headers, json=body)
    assert response.status_code == 422
    me = await client.get("/api/auth/me", headers=headers)
    assert me.json()["full_name"] == registered["user"]["full_name"]


@pytest.mark.parametrize(
    "avatar_url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)//https://x",
        "data:image/svg+xml,<svg onload=alert(1)>",
        "vbscript:msgbox(1)",
        "ftp://example.com/a.png",
        "https://",
        "//example.com/a.png",
        "not a url",
    ],
)
async def test_avatar_url_must_be_http_or_https(
    client: httpx.AsyncClient, registered, avatar_url
) -> None:
    headers = bearer(registered["access_token"])
    before = (await client.get("/api/auth/me", headers=headers)).json()["avatar_url"]
    response = await client.put("/api/auth/me", headers=headers, json={"avatar_url": avatar_url})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "avatar_url"]
    me = await client.get("/api/auth/me", headers=headers)
    assert me.json()["avatar_url"] == before


async def test_update_me_anonymous_is_401(client: httpx.AsyncClient) -> None:
    assert (await client.put("/api/auth/me", json={"full_name": "X"})).status_code == 401


async def test_users_list_hides_other_users_emails(client: httpx.AsyncClient, registered) -> None:
    other = (await client.post("/api/auth/register", json=new_user())).json()
    response = await client.get("/api/auth/users", headers=bearer(registered["access_token"]))
    assert response.status_code == 200
    users = {user["id"]: user for user in response.json()}
    assert users[registered["user"]["id"]]["email"] == registered["request"]["email"]
    assert users[other["user"]["id"]]["email"] is None
    assert users[other["user"]["id"]]["username"] == other["user"]["username"]
    assert (await client.get("/api/auth/users")).status_code == 401


async def test_refresh_rotates(client: httpx.AsyncClient, registered) -> None:
    first = await client.post(
        "/api/auth/refresh", json={"refresh_token": registered["refresh_token"]}
    )
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != registered["refresh_token"]
    assert (
        await client.get("/api/auth/me", headers=bearer(rotated["access_token"]))
    ).status_code == 200
    second = await client.post(
        "/api/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    assert second.status_code == 200


async def test_refresh_reuse_revokes_the_family(app, client: httpx.AsyncClient, registered) -> None:
    old = registered["refresh_token"]
    new = (await client.post("/api/auth/refresh", json={"refresh_token": old})).json()
    await spend_before_the_grace(app, old)
    reuse = await client.post("/api/auth/refresh", json={"refresh_token": old})
    assert reuse.status_code == 401
    # The thief's replay also kills the legitimate newest token of the family.
    after = await client.post("/api/auth/refresh", json={"refresh_token": new["refresh_token"]})
    assert after.status_code == 401


async def test_refresh_bad_input(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/auth/refresh", json={"refresh_token": "x"})).status_code == 401
    assert (await client.post("/api/auth/refresh", json={})).status_code == 422


async def test_logout_revokes_refresh_token(client: httpx.AsyncClient, registered) -> None:
    headers = bearer(registered["access_token"])
    response = await client.post(
        "/api/auth/logout", headers=headers, json={"refresh_token": registered["refresh_token"]}
    )
    assert response.status_code == 204
    refresh = await client.post(
        "/api/auth/refresh", json={"refresh_token": registered["refresh_token"]}
    )
    assert refresh.status_code == 401


async def test_logout_without_body_ends_every_session(
    client: httpx.AsyncClient, registered
) -> None:
    credentials = registered["request"]
    second = (
        await client.post(
            "/api/auth/login",
            json={"email": credentials["email"], "password": credentials["password"]},
        )
    ).json()
    response = await client.post("/api/auth/logout", headers=bearer(second["access_token"]))
    assert response.status_code == 204
    for token in (registered["refresh_token"], second["refresh_token"]):
        refreshed = await client.post("/api/auth/refresh", json={"refresh_token": token})
        assert refreshed.status_code == 401


async def test_logout_refuses_another_users_token(client: httpx.AsyncClient, registered) -> None:
    other = (await client.post("/api/auth/register", json=new_user())).json()
    response = await client.post(
        "/api/auth/logout",
        headers=bearer(other["access_token"]),
        json={"refresh_token": registered["refresh_token"]},
    )
    assert response.status_code == 403
    still_valid = await client.post(
        "/api/auth/refresh", json={"refresh_token": registered["refresh_token"]}
    )
    assert still_valid.status_code == 200


async def test_logout_anonymous_is_401(client: httpx.AsyncClient, registered) -> None:
    response = await client.post(
        "/api/auth/logout", json={"refresh_token": registered["refresh_token"]}
    )
    assert response.status_code == 401


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": "ok", "database": "ok"}


async def test_changed_secret_key_retires_the_keys_it_sealed(
    client: httpx.AsyncClient, registered
) -> None:
    old_kid = jwt.get_unverified_header(registered["access_token"])["kid"]
    rotated = create_app(IdentitySettings(**SUITE.env(SECRET_KEY="a-new-secret")))
    async with (
        rotated.router.lifespan_context(rotated),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=rotated), base_url="http://x") as other,
    ):
        jwks = (await other.get("/.well-known/jwks.json")).json()
        assert old_kid not in {key["kid"] for key in jwks["keys"]}
        me = await other.get("/api/auth/me", headers=bearer(registered["access_token"]))
        assert me.status_code == 401
        fresh = await other.post(
            "/api/auth/login",
            json={
                "email": registered["request"]["email"],
                "password": registered["request"]["password"],
            },
        )
        assert fresh.status_code == 200
        assert jwt.get_unverified_header(fresh.json()["access_token"])["kid"] != old_kid


@pytest.mark.parametrize("field", ["full_name", "username"])
async def test_nul_characters_are_422_not_500(client: httpx.AsyncClient, field) -> None:
    body = new_user()
    body[field] = body[field][:4] + "\u0000" + body[field][4:]
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 422
    login = await client.post("/api/auth/login", json={"email": "a\u0000@b.c", "password": "x"})
    assert login.status_code == 422
