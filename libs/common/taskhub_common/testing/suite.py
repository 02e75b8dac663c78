"""The fixtures every service's test suite shares.

A service's tests run its app in-process beside a real identity (tokens, `user.*` events) and,
for services that hang things on tasks, a real tasks service, all on one real PostgreSQL
database (a schema each) and the shared in-process bus. A suite's conftest names itself and
takes the shared fixtures, then defines its own `app` and `directories`:

    SUITE = Suite("comments")
    identity_app, identity, tasks_app, tasks, client, make_user = SUITE.shared_fixtures()

    @pytest.fixture(scope="session")
    async def app(tasks_app) -> AsyncIterator[FastAPI]: ...

The fixtures are made per suite (not one plugin for all): a session-scoped fixture defined once
would be made for the first suite of a run and handed, unchanged, to every other suite.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import pytest
from fastapi import FastAPI

from taskhub_common.http import register_local_app
from taskhub_common.testing import (
    asgi_client,
    bearer,
    database_env,
    new_user,
    recreate_database,
    wait_in_directory,
)

User = tuple[dict[str, Any], dict[str, str]]
UserFactory = Callable[..., Awaitable[User]]


class SharedFixtures(NamedTuple):
    identity_app: Any
    identity: Any
    tasks_app: Any
    tasks: Any
    client: Any
    make_user: Any


@dataclass(frozen=True)
class Suite:
    """One service's test suite: its database and the addresses its neighbours answer at."""

    name: str

    @property
    def database(self) -> str:
        return f"taskhub_test_{self.name}"

    @property
    def identity_url(self) -> str:
        return f"http://identity.{self.name}-test"

    @property
    def tasks_url(self) -> str:
        return f"http://tasks.{self.name}-test"

    def env(self, **overrides: Any) -> dict[str, Any]:
        """Settings every app of the suite gets (short retry delays: tests wait for them)."""
        return {
            **database_env(self.database),
            "IDENTITY_URL": self.identity_url,
            "TASKS_URL": self.tasks_url,
            "ENVIRONMENT": "test",
            "EVENT_RETRY_DELAYS_MS": "50,100",
            **overrides,
        }

    def shared_fixtures(self) -> SharedFixtures:
        """identity_app, identity (a client of it), tasks_app, tasks (a client of it), client
        (of the suite's own `app`) and make_user (which waits until every app of the suite's
        `directories` fixture knows the new user)."""
        suite = self

        @pytest.fixture(scope="session")
        async def identity_app() -> AsyncIterator[FastAPI]:
            from identity.app import create_app
            from identity.settings import IdentitySettings

            await recreate_database(suite.database)
            application = create_app(IdentitySettings(**suite.env()))
            register_local_app(suite.identity_url, application)
            async with application.router.lifespan_context(application):
                yield application

        @pytest.fixture(scope="session")
        async def identity(identity_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
            async with asgi_client(identity_app, suite.identity_url) as http:
                yield http

        @pytest.fixture(scope="session")
        async def tasks_app(identity_app: FastAPI) -> AsyncIterator[FastAPI]:
            """The real tasks service (in-process cache), reached by the app under test."""
            from tasks.app import create_app
            from tasks.settings import TasksSettings

            application = create_app(TasksSettings(**suite.env()))
            register_local_app(suite.tasks_url, application)
            async with application.router.lifespan_context(application):
                yield application

        @pytest.fixture(scope="session")
        async def tasks(tasks_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
            async with asgi_client(tasks_app, suite.tasks_url) as http:
                yield http

        @pytest.fixture(scope="session")
        async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
            async with asgi_client(app, f"http://{suite.name}") as http:
                yield http

        @pytest.fixture(scope="session")
        def make_user(identity: httpx.AsyncClient, directories: list[FastAPI]) -> UserFactory:
            async def make(in_directory: bool = True) -> User:
                response = await identity.post("/api/auth/register", json=new_user())
                assert response.status_code == 201, response.text
                body = response.json()
                if in_directory:
                    for app in directories:
                        await wait_in_directory(app, body["user"]["id"])
                return body["user"], bearer(body["access_token"])

            return make

        return SharedFixtures(identity_app, identity, tasks_app, tasks, client, make_user)
