import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, update

from identity.app import create_app
from identity.models import RefreshToken
from identity.settings import IdentitySettings
from taskhub_common.testing import new_user, recreate_database
from taskhub_common.testing.suite import Suite

SUITE = Suite("identity")
client = SUITE.shared_fixtures().client


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[FastAPI]:
    await recreate_database(SUITE.database)
    application = create_app(IdentitySettings(**SUITE.env()))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def registered(client: httpx.AsyncClient) -> dict:
    """A freshly registered user: the request body and the auth response."""
    body = new_user()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    return {"request": body, **response.json()}


async def spend_before_the_grace(app: FastAPI, refresh_token: str) -> None:
    """Date a spent refresh token's use back past the grace window: presenting it again is
    then a reuse, not a second tab."""
    async with app.state.database.sessionmaker.begin() as session:
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == hashlib.sha256(refresh_token.encode()).hexdigest())
            .values(used_at=func.now() - timedelta(seconds=60))
        )
