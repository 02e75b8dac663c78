"""Idempotency-Key on identity's register and PUT /me: a retry replays, another body is 422."""

import uuid

import httpx
from sqlalchemy import func, select

from identity.models import User
from taskhub_common.outbox import outbox
from taskhub_common.testing import bearer, new_user


async def users_named(app, username: str) -> int:
    async with app.state.database.sessionmaker() as session:
        return await session.scalar(
            select(func.count()).select_from(User).where(User.username == username)
        )


async def test_a_retried_registration_creates_one_user(app, client: httpx.AsyncClient) -> None:
    body = new_user()
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/api/auth/register", headers=headers, json=body)
    again = await client.post("/api/auth/register", headers=headers, json=body)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await users_named(app, body["username"]) == 1
    # Another anonymous body under the same key: refused, nobody registered.
    other = new_user()
    refused = await client.post("/api/auth/register", headers=headers, json=other)
    assert refused.status_code == 422
    assert await users_named(app, other["username"]) == 0


async def test_a_retried_profile_update_publishes_once(
    app, client: httpx.AsyncClient, registered
) -> None:
    headers = {**bearer(registered["access_token"]), "Idempotency-Key": str(uuid.uuid4())}
    body = {"full_name": "Retried Name"}
    first = await client.put("/api/auth/me", headers=headers, json=body)
    again = await client.put("/api/auth/me", headers=headers, json=body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    async with app.state.database.sessionmaker() as session:
        updates = await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(
                outbox.c.routing_key == "user.updated",
                outbox.c.payload["aggregate_id"].astext == registered["user"]["id"],
            )
        )
    assert updates == 1
    # Without a token PUT /me is 401, key or not: an anonymous key is no way into it.
    anonymous = await client.put("/api/auth/me", headers={"Idempotency-Key": "k"}, json=body)
    assert anonymous.status_code == 401
