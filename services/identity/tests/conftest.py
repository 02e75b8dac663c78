from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from identity.app import create_app
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
