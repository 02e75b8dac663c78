from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from identity.app import create_app
from identity.settings import IdentitySettings
from taskhub_common.testing import database_env, new_user, recreate_database

DATABASE = "taskhub_test_identity"


@pytest.fixture(scope="session")
async def app() -> AsyncIterator[FastAPI]:
    await recreate_database(DATABASE)
    settings = IdentitySettings(**database_env(DATABASE), ENVIRONMENT="test")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://identity"
    ) as http:
        yield http


@pytest.fixture
async def registered(client: httpx.AsyncClient) -> dict:
    """A freshly registered user: the request body and the auth response."""
    body = new_user()
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    return {"request": body, **response.json()}
