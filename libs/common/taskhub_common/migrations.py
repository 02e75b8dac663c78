"""What every service's alembic env.py and first migration share."""

import asyncio

from alembic import context, op
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from taskhub_common import deleted_tasks as deleted_tasks_table
from taskhub_common import idempotency, outbox, users
from taskhub_common.db import Database
from taskhub_common.settings import ServiceSettings


def run_migrations(
    service_metadata: MetaData,
    settings: ServiceSettings,
    user_directory: bool = False,
    deleted_tasks: bool = False,
) -> None:
    """Body of env.py: migrate on the connection the app hands over (at start), or on a new one
    (alembic's command line, e.g. `alembic revision --autogenerate`)."""
    connection = context.config.attributes.get("connection")
    schema = context.config.attributes.get("schema", settings.schema_name)
    metadata = [service_metadata, outbox.metadata, idempotency.metadata]
    if user_directory:
        metadata.append(users.metadata)
    if deleted_tasks:
        metadata.append(deleted_tasks_table.metadata)
    if connection is not None:
        _run(connection, metadata, schema)
        return

    async def run_standalone() -> None:
        database = Database(settings)
        async with database.engine.begin() as new_connection:
            await new_connection.run_sync(_run, metadata, schema)
        await database.dispose()

    asyncio.run(run_standalone())


def _run(connection: Connection, metadata: list[MetaData], schema: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_outbox_and_inbox() -> None:
    """The outbox, inbox and event-queue tables, created by each service's first migration
    (and by a later one, for the tables added since: what exists is left as it is)."""
    outbox.metadata.create_all(op.get_bind())


def create_user_directory() -> None:
    """The local user directory, created by the first migration of each service keeping one."""
    users.metadata.create_all(op.get_bind())
