"""`make run`'s promise: data survives a restart, and Ctrl-C stops the process cleanly. One
process for the module, started on a fresh DATA_DIR (each fresh start costs an initdb)."""

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from taskhub_common.testing import bearer, new_user
from tests.e2e.stack import Stack

# It starts stacks of its own within the test: on a loaded machine that takes minutes.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(
        "embedded", tmp_path_factory.mktemp("embedded"), extra_env={"ENVIRONMENT": "test"}
    )
    stack.start()
    yield stack
    if stack.processes[0].popen.poll() is None:
        assert stack.stop() == [0]


def log_lines(stack: Stack) -> list[dict]:
    text = stack.processes[0].log_path.read_text()
    complete = text[: text.rfind("\n") + 1]  # not a line the process is still writing
    return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]


def access_lines(stack: Stack) -> set[tuple[str, str]]:
    return {
        (line["service"], line["message"])
        for line in log_lines(stack)
        if line.get("logger") == "taskhub.access"
    }


def test_embedded_logs_name_the_service_that_wrote_them(embedded: Stack) -> None:
    """One process hosts every service; each request line says which one served it."""
    base_url = embedded.base_url
    token = httpx.post(f"{base_url}/api/auth/register", json=new_user()).json()
    assert httpx.get(f"{base_url}/api/tasks", headers=bearer(token["access_token"])).is_success
    expected = {
        ("identity", "POST /api/auth/register 201"),
        ("gateway", "POST /api/auth/register 201"),
        ("tasks", "GET /api/tasks 200"),
    }
    # An access line is written once the response has gone: it may come a moment later.
    deadline = time.monotonic() + 10
    while not expected <= (served := access_lines(embedded)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert expected <= served, served
    # The first screen (a fresh DATA_DIR): JSON lines only, since the output is not a terminal,
    # no library chatter (pgserver's initdb, alembic's set-up, platformdirs' warning), and the
    # banner that says where to go.
    text = embedded.processes[0].log_path.read_text()
    assert all(line.startswith("{") for line in text.splitlines()), text[:2000]
    loggers = {line["logger"] for line in log_lines(embedded) if line["level"] == "INFO"}
    assert not {name for name in loggers if name.startswith(("pgserver", "alembic"))}, loggers
    banners = [
        line["message"] for line in log_lines(embedded) if "TaskHub is ready" in line["message"]
    ]
    port = base_url.rsplit(":", 1)[1]
    for url in ("/api", "/docs", "/api/health"):
        assert f"http://127.0.0.1:{port}{url}" in banners[-1], banners


def test_user_survives_a_restart_of_the_embedded_mode(embedded: Stack) -> None:
    body = new_user()
    assert httpx.post(f"{embedded.base_url}/api/auth/register", json=body).status_code == 201
    assert embedded.stop() == [0]

    base_url = embedded.start()
    login = httpx.post(
        f"{base_url}/api/auth/login",
        json={"email": body["email"], "password": body["password"]},
    )
    assert login.status_code == 200
    me = httpx.get(f"{base_url}/api/auth/me", headers=bearer(login.json()["access_token"]))
    assert me.json()["username"] == body["username"]
    assert (embedded.workdir / "var" / "pgdata" / "PG_VERSION").exists()
