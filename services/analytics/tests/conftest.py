"""The analytics service in-process, with a real identity and a real tasks service beside it,
all on one real PostgreSQL database (a schema each) and the shared in-process bus.

Identity publishes `user.*` (the analytics user directory); tasks publishes `task.*` (the read
model) and serves the export the backfill reads.
"""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from analytics.app import create_app
from analytics.consumers import BATCH_EVENT_HANDLERS, EVENT_HANDLERS
from analytics.settings import AnalyticsSettings
from taskhub_common.consumer import EventConsumer
from taskhub_common.events import EventEnvelope
from taskhub_common.testing.suite import Suite, User, UserFactory

SUITE = Suite("analytics")
identity_app, identity, tasks_app, tasks, client, make_user = SUITE.shared_fixtures()


def analytics_settings(**overrides: Any) -> AnalyticsSettings:
    return AnalyticsSettings(**SUITE.env(**overrides))


@pytest.fixture(scope="session")
async def app(identity_app: FastAPI, tasks_app: FastAPI) -> AsyncIterator[FastAPI]:
    application = create_app(analytics_settings())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def directories(app: FastAPI, tasks_app: FastAPI) -> list[FastAPI]:
    """A new user must be known to analytics (names) and to tasks (to be named an assignee)."""
    return [app, tasks_app]


@pytest.fixture(scope="session")
async def alice(make_user: UserFactory) -> User:
    return await make_user()


@pytest.fixture(scope="session")
async def bob(make_user: UserFactory) -> User:
    return await make_user()


@pytest.fixture
def deliver(app: FastAPI):
    """Hands an event to the analytics consumer as the bus would (inbox, one transaction,
    after-commit cache invalidation)."""
    consumer = EventConsumer(
        "analytics", app.state.database, EVENT_HANDLERS, app.state, BATCH_EVENT_HANDLERS
    )

    async def deliver_event(envelope: EventEnvelope) -> None:
        await consumer.process(envelope)

    return deliver_event


@pytest.fixture
def deliver_batch(app: FastAPI):
    """Hands a batch of events to the analytics consumer as the bus does (one inbox insert,
    one transaction, a run of task events to the batch handler at once)."""
    consumer = EventConsumer(
        "analytics", app.state.database, EVENT_HANDLERS, app.state, BATCH_EVENT_HANDLERS
    )
    return consumer.process_batch
