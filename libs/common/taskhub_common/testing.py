"""Helpers for the suite's tests: the real local servers they run against."""

import os
import uuid

import asyncpg

PG_HOST = os.environ.get("TEST_DB_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_DB_PORT", "5432"))
PG_USER = os.environ.get("TEST_DB_USER", "postgres")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_HOST = os.environ.get("TEST_REDIS_HOST", "127.0.0.1")


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")


async def recreate_database(name: str) -> None:
    """Drop and create a database for one test run. Fails loudly when PostgreSQL is down:
    a test that needs a server never skips."""
    connection = await _admin_connection()
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def create_database_if_missing(name: str) -> None:
    connection = await _admin_connection()
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def database_env(name: str) -> dict[str, str]:
    return {"DB_HOST": PG_HOST, "DB_PORT": str(PG_PORT), "DB_USER": PG_USER, "DB_NAME": name}


def new_user() -> dict[str, str]:
    """A registration body no other test uses."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "email": f"user-{suffix}@example.com",
        "username": f"user_{suffix}",
        "full_name": f"User {suffix}",
        "password": "correct horse battery",
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
