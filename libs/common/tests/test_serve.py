import asyncio
import json
import os
import socket
import subprocess
import sys

from sqlalchemy import text

from taskhub_common.db import Database
from taskhub_common.registry import GATEWAY_PORT, SERVICES
from taskhub_common.serve import (
    GRACEFUL_SHUTDOWN_SECONDS,
    migrations_dir,
    target,
    uvicorn_options,
)
from taskhub_common.settings import ServiceSettings
from taskhub_common.testing import PG_HOST, PG_PORT, PG_USER, recreate_database

DATABASE = "taskhub_test_serve"


def test_each_registry_service_runs_its_app_factory_on_its_port() -> None:
    for entry in SERVICES:
        options = uvicorn_options(target(entry.name), "127.0.0.1")
        assert (options["app"], options["factory"]) == (entry.app_factory, True)
        assert options["proxy_headers"] is False
        assert options["port"] == entry.port
        assert options["timeout_graceful_shutdown"] == GRACEFUL_SHUTDOWN_SECONDS


def test_the_gateway_is_served_too_and_port_can_be_overridden() -> None:
    options = uvicorn_options(target("gateway"), "127.0.0.1")
    assert options["app"] == "gateway.app:create_app"
    assert options["port"] == GATEWAY_PORT
    assert uvicorn_options(target("gateway"), "127.0.0.1", 9000)["port"] == 9000


def test_uvicorns_own_first_lines_are_json_lines_of_the_service() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "taskhub_common.serve"],
        env={**os.environ, "SERVICE": "gateway", "PORT": str(port), "LOG_FORMAT": "json"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = json.loads(process.stderr.readline())
    finally:
        process.kill()
        process.wait(timeout=30)
    assert first["service"] == "gateway"
    assert first["logger"].startswith("uvicorn")
    assert "Started server process" in first["message"]


def test_an_unknown_service_is_refused_with_the_known_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskhub_common.serve"],
        env={**os.environ, "SERVICE": "nonesuch"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SERVICE='nonesuch'" in result.stderr
    assert "tasks" in result.stderr


def test_every_service_but_the_gateway_has_migrations() -> None:
    assert migrations_dir(target("gateway")) is None
    for entry in SERVICES:
        directory = migrations_dir(target(entry.name))
        assert directory is not None and (directory / "env.py").is_file(), entry.name


async def test_migrate_only_brings_the_schema_to_head_and_exits() -> None:
    await recreate_database(DATABASE)
    env = {
        **os.environ,
        "SERVICE": "tasks",
        "DB_HOST": PG_HOST,
        "DB_PORT": str(PG_PORT),
        "DB_USER": PG_USER,
        "DB_NAME": DATABASE,
    }
    for _ in range(2):  # a second run (another pod's init container) finds nothing to do
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "taskhub_common.serve",
            "--migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
        assert process.returncode == 0, stderr.decode()
        assert "tasks: schema at head" in stdout.decode()
    settings = ServiceSettings(
        SERVICE_NAME="tasks", DB_HOST=PG_HOST, DB_PORT=PG_PORT, DB_USER=PG_USER, DB_NAME=DATABASE
    )
    database = Database(settings)
    try:
        async with database.engine.connect() as connection:
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            tasks_table = await connection.scalar(text("SELECT to_regclass('tasks.tasks')"))
    finally:
        await database.dispose()
    assert version
    assert tasks_table == "tasks"


def test_the_entrypoint_documents_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskhub_common.serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--migrate" in result.stdout
