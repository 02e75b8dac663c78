"""Database access: one async engine per service, bound to the service's own schema."""

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pydantic_core
from alembic import command
from alembic.config import Config
from fastapi import Request
from sqlalchemy import URL, Select, Table, Text, bindparam, cast, column, event, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

from taskhub_common.settings import ServiceSettings

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def database_url(settings: ServiceSettings) -> URL | str:
    if settings.DATABASE_URL:
        return settings.DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    if settings.DB_HOST:
        return URL.create(
            "postgresql+asyncpg",
            username=settings.DB_USER,
            password=settings.DB_PASSWORD or None,
            host=settings.DB_HOST,
            port=settings.DB_PORT,
            database=settings.DB_NAME,
        )
    from taskhub_common.embedded_postgres import ensure_database

    socket_dir = ensure_database(settings.DATA_DIR, settings.DB_NAME)
    return URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=settings.DB_NAME,
        query={"host": socket_dir},
    )


class Database:
    """Engine, sessions and migrations of one service."""

    def __init__(self, settings: ServiceSettings) -> None:
        schema = settings.schema_name
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            database_url(settings),
            pool_size=settings.DB_POOL_SIZE,
            max_overflow=settings.DB_MAX_OVERFLOW,
            pool_pre_ping=True,
            echo=settings.DEBUG,
            connect_args={"server_settings": {"search_path": schema}},
            # pydantic-core's serializer: several times faster than json.dumps on outbox rows.
            json_serializer=lambda value: pydantic_core.to_json(value).decode(),
        )
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # Set after each commit that wrote an outbox row, so the relay publishes at once.
        self.outbox_written = asyncio.Event()
        self.sessionmaker.configure(info={"outbox_written": self.outbox_written})

    async def migrate(self, migrations_dir: Path) -> None:
        """Bring the schema to alembic head; an advisory lock keeps replicas from racing."""
        async with self.engine.connect() as connection:
            await connection.execute(
                text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": self.schema}
            )
            try:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                await connection.commit()
                await connection.run_sync(_upgrade, migrations_dir, self.schema)
                await connection.commit()
            finally:
                await connection.execute(
                    text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": self.schema}
                )
                await connection.commit()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade(connection, migrations_dir: Path, schema: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    command.upgrade(config, "head")


@event.listens_for(Session, "after_commit")
def _wake_outbox_relay(session: Session) -> None:
    if session.info.pop("outbox_pending", False):
        session.info["outbox_written"].set()


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run `callback` once this session's transaction has committed (e.g. drop a cache: done
    before the commit, a concurrent read could cache the old state again)."""
    session.info.setdefault("after_commit", []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    for callback in session.info.pop("after_commit", []):
        await callback()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; the route class commits it before the response is sent."""
    opened_by_route = getattr(request.state, "db_session", None)
    if opened_by_route is not None:  # a request with an Idempotency-Key (routing.py)
        yield opened_by_route
        return
    database: Database = request.app.state.database
    async with database.sessionmaker() as session:
        request.state.db_session = session
        yield session


def json_rows(table: Table, names: Sequence[str]) -> Select:
    """The rows of a JSON array bound as `rows`, typed as `table`'s columns `names`: a batch of
    any size is one parameter of one statement, compiled and prepared once (a multi-row VALUES
    is a new statement for every number of rows, and its compilation cost more than the batch),
    parsed by PostgreSQL in one pass."""
    incoming = (
        func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(name="incoming", with_types=True)
    )
    return select(*(incoming.c[name] for name in names))


def array_rows(
    name: str, columns: Mapping[str, TypeEngine], with_ordinality: str | None = None
) -> TableValuedAlias:
    """Rows made of arrays, one for each column, bound as `<name>_<column>` (a statement's
    own columns' names are taken), a row per position (numbered in `with_ordinality`, when
    named): like `json_rows`, one statement for a batch of any size, but each value arrives in
    its own type, with nothing for PostgreSQL to parse."""
    return (
        func.unnest(
            *(bindparam(f"{name}_{key}", type_=ARRAY(type_)) for key, type_ in columns.items())
        )
        .table_valued(
            *(column(key, type_) for key, type_ in columns.items()),
            with_ordinality=with_ordinality,
        )
        .render_derived(name=name)
    )
