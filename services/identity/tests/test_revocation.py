"""Logout and family revocation deny the access tokens already issued (even ones the verifier
has cached); two tabs refreshing with one token inside the grace window share the new pair."""

import asyncio

import httpx

from taskhub_common.testing import bearer

from .conftest import spend_before_the_grace


async def me(client: httpx.AsyncClient, access_token: str) -> int:
    return (await client.get("/api/auth/me", headers=bearer(access_token))).status_code


async def login(client: httpx.AsyncClient, registered: dict) -> dict:
    credentials = registered["request"]
    response = await client.post(
        "/api/auth/login",
        json={"email": credentials["email"], "password": credentials["password"]},
    )
    assert response.status_code == 200
    return response.json()


async def test_logout_denies_its_access_token_at_once(
    client: httpx.AsyncClient, registered
) -> None:
    access = registered["access_token"]
    other_session = await login(client, registered)
    assert await me(client, access) == 200  # now in the verifier's cache too
    response = await client.post(
        "/api/auth/logout",
        headers=bearer(access),
        json={"refresh_token": registered["refresh_token"]},
    )
    assert response.status_code == 204
    assert await me(client, access) == 401
    # Only that session: the other login goes on.
    assert await me(client, other_session["access_token"]) == 200


async def test_logout_without_body_denies_every_session(
    client: httpx.AsyncClient, registered
) -> None:
    second = await login(client, registered)
    assert await me(client, registered["access_token"]) == 200
    response = await client.post("/api/auth/logout", headers=bearer(second["access_token"]))
    assert response.status_code == 204
    assert await me(client, registered["access_token"]) == 401
    assert await me(client, second["access_token"]) == 401
    # A new login is a new session, not denied.
    assert await me(client, (await login(client, registered))["access_token"]) == 200


async def test_a_reused_refresh_token_denies_the_family_access_tokens(
    app, client: httpx.AsyncClient, registered
) -> None:
    old = registered["refresh_token"]
    new = (await client.post("/api/auth/refresh", json={"refresh_token": old})).json()
    assert await me(client, new["access_token"]) == 200
    await spend_before_the_grace(app, old)
    reuse = await client.post("/api/auth/refresh", json={"refresh_token": old})
    assert reuse.status_code == 401
    for access in (registered["access_token"], new["access_token"]):
        assert await me(client, access) == 401


async def test_two_tabs_refreshing_at_once_get_the_same_pair(
    client: httpx.AsyncClient, registered
) -> None:
    body = {"refresh_token": registered["refresh_token"]}
    first, second = await asyncio.gather(
        client.post("/api/auth/refresh", json=body), client.post("/api/auth/refresh", json=body)
    )
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert first.json() == second.json()
    pair = first.json()
    assert pair["refresh_token"] != registered["refresh_token"]
    # The family lives on: the shared pair works and rotates as usual.
    assert await me(client, pair["access_token"]) == 200
    rotated = await client.post("/api/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    # A third tab, late, within the grace, still gets that first pair, not the rotated one.
    late = await client.post("/api/auth/refresh", json=body)
    assert late.status_code == 200
    assert late.json() == pair


async def test_after_the_grace_the_same_token_is_a_reuse(
    app, client: httpx.AsyncClient, registered
) -> None:
    body = {"refresh_token": registered["refresh_token"]}
    pair = (await client.post("/api/auth/refresh", json=body)).json()
    await spend_before_the_grace(app, registered["refresh_token"])
    assert (await client.post("/api/auth/refresh", json=body)).status_code == 401
    assert await me(client, pair["access_token"]) == 401
