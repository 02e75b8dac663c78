"""`make run`'s promise: data survives a restart, and Ctrl-C stops the process cleanly."""

import json

import httpx

from taskhub_common.testing import bearer, new_user
from tests.e2e.stack import Stack


def test_user_survives_a_restart_of_the_embedded_mode(tmp_path) -> None:
    stack = Stack("embedded", tmp_path, extra_env={"ENVIRONMENT": "test"})
    body = new_user()
    base_url = stack.start()
    try:
        assert httpx.post(f"{base_url}/api/auth/register", json=body).status_code == 201
    finally:
        assert stack.stop() == [0]

    base_url = stack.start()
    try:
        login = httpx.post(
            f"{base_url}/api/auth/login",
            json={"email": body["email"], "password": body["password"]},
        )
        assert login.status_code == 200
        me = httpx.get(f"{base_url}/api/auth/me", headers=bearer(login.json()["access_token"]))
        assert me.json()["username"] == body["username"]
    finally:
        assert stack.stop() == [0]
    assert (tmp_path / "var" / "pgdata" / "PG_VERSION").exists()


def log_lines(stack: Stack) -> list[dict]:
    lines = stack.processes[0].log_path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_embedded_logs_name_the_service_that_wrote_them(tmp_path) -> None:
    """One process hosts every service; each request line says which one served it."""
    stack = Stack("embedded", tmp_path, extra_env={"ENVIRONMENT": "test"})
    base_url = stack.start()
    try:
        token = httpx.post(f"{base_url}/api/auth/register", json=new_user()).json()
        assert httpx.get(f"{base_url}/api/tasks", headers=bearer(token["access_token"])).is_success
    finally:
        assert stack.stop() == [0]
    served = {
        (line["service"], line["message"])
        for line in log_lines(stack)
        if line.get("logger") == "taskhub.access"
    }
    assert ("identity", "POST /api/auth/register 201") in served
    assert ("gateway", "POST /api/auth/register 201") in served
    assert ("tasks", "GET /api/tasks 200") in served
    # The first screen (a fresh DATA_DIR): JSON lines only, since the output is not a terminal,
    # no library chatter (pgserver's initdb, alembic's set-up, platformdirs' warning), and the
    # banner that says where to go.
    text = stack.processes[0].log_path.read_text()
    assert all(line.startswith("{") for line in text.splitlines()), text[:2000]
    loggers = {line["logger"] for line in log_lines(stack) if line["level"] == "INFO"}
    assert not {name for name in loggers if name.startswith(("pgserver", "alembic"))}, loggers
    (ready,) = [
        line["message"] for line in log_lines(stack) if "TaskHub is ready" in line["message"]
    ]
    port = base_url.rsplit(":", 1)[1]
    for url in ("/api", "/docs", "/api/health"):
        assert f"http://127.0.0.1:{port}{url}" in ready, ready
