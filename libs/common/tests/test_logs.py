"""The log format: JSON lines for machines, one readable line for a person at a terminal, and
the libraries' chatter only when debugging."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from taskhub_common import logs
from taskhub_common.logs import JsonFormatter, TextFormatter, configure_logging


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)


@pytest.fixture(autouse=True)
def no_service_in_context() -> Iterator[None]:
    """Lines name the formatter's service: a service started earlier in this process (another
    suite's lifespan) left its own name in the context."""
    token = logs.service_var.set(None)
    yield
    logs.service_var.reset(token)


def formatter_for(monkeypatch, stream: io.StringIO, log_format: str) -> logging.Formatter:
    monkeypatch.setattr(logs.sys, "stderr", stream)
    configure_logging("tasks", "INFO", log_format)
    return logging.getLogger().handlers[0].formatter


@pytest.mark.usefixtures("restore_logging")
def test_auto_is_text_on_a_terminal_and_json_elsewhere(monkeypatch) -> None:
    assert isinstance(formatter_for(monkeypatch, FakeTerminal(), "auto"), TextFormatter)
    assert isinstance(formatter_for(monkeypatch, io.StringIO(), "auto"), JsonFormatter)
    assert isinstance(formatter_for(monkeypatch, FakeTerminal(), "json"), JsonFormatter)
    assert isinstance(formatter_for(monkeypatch, io.StringIO(), "text"), TextFormatter)


@pytest.mark.usefixtures("restore_logging")
def test_a_text_line_is_one_readable_line_with_the_records_fields(monkeypatch) -> None:
    stream = FakeTerminal()
    formatter_for(monkeypatch, stream, "auto")
    logging.getLogger("x").info(
        "GET /api/tasks 200", extra={"status": 200, "color_message": "\x1b[1mGET\x1b[0m"}
    )
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("INFO    tasks     GET /api/tasks 200  status=200"), line


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_stay_json(monkeypatch) -> None:
    stream = io.StringIO()
    formatter_for(monkeypatch, stream, "auto")
    logging.getLogger("x").warning("slow", extra={"ms": 12})
    entry = json.loads(stream.getvalue())
    assert (entry["level"], entry["service"], entry["message"], entry["ms"]) == (
        "WARNING",
        "tasks",
        "slow",
        12,
    )


@pytest.mark.usefixtures("restore_logging")
def test_library_chatter_shows_only_when_debugging(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", stream)
    configure_logging("identity", "INFO", "json")
    logging.getLogger("pgserver").info("Running commandline: initdb")
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    logging.getLogger("pgserver").warning("a real problem")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "a real problem"
    ]
    configure_logging("identity", "DEBUG", "json")
    logging.getLogger("pgserver").info("Running commandline: initdb")
    assert "initdb" in stream.getvalue()
