from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, MetaData, String, Table, Uuid, text

from taskhub_common.db import Database
from taskhub_common.idempotency import metadata as idempotency_metadata
from taskhub_common.outbox import metadata as outbox_metadata
from taskhub_common.settings import ServiceSettings
from taskhub_common.testing import PG_HOST, PG_PORT, PG_USER, recreate_database

DATABASE = "taskhub_test_common"

test_metadata = MetaData()
# What the test handlers write: one row per handled event, so duplicates would show.
handled = Table(
    "handled",
    test_metadata,
    Column("event_id", Uuid, nullable=False),
    Column("note", String(50), nullable=False),
)


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[Database]:
    await recreate_database(DATABASE)
    settings = ServiceSettings(
        SERVICE_NAME="backbone", DB_HOST=PG_HOST, DB_PORT=PG_PORT, DB_USER=PG_USER, DB_NAME=DATABASE
    )
    db = Database(settings)
    async with db.engine.begin() as connection:
        await connection.execute(text('CREATE SCHEMA IF NOT EXISTS "backbone"'))
        await connection.run_sync(outbox_metadata.create_all)
        await connection.run_sync(idempotency_metadata.create_all)
        await connection.run_sync(test_metadata.create_all)
    yield db
    await db.dispose()


@pytest.fixture
def handled_table() -> Table:
    return handled
