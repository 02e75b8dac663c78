"""The stack `make fuzz` runs schemathesis against: the embedded mode (one process, its own
PostgreSQL), as `make run` starts it, so fuzzing shares no server with another suite."""

from collections.abc import Iterator

import pytest

from tests.e2e.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    running = Stack(
        "embedded",
        tmp_path_factory.mktemp("fuzz"),
        extra_env={
            "ENVIRONMENT": "test",
            # Thousands of requests from one user and one address in a minute: the budgets
            # would turn most of them into 429s before they reach a route.
            "RATE_LIMIT_DEFAULT": "1000000/minute",
            "RATE_LIMIT_AUTH": "1000000/minute",
        },
    )
    running.start()
    yield running
    assert running.stop() == [0], "the embedded process did not stop cleanly"
