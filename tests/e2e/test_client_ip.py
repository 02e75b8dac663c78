"""With no trusted proxies, X-Forwarded-For is the client's word and changes nothing: a fresh
address per request does not escape the per-IP login budget. Each mode's gateway is started
the way it is run (`python -m gateway.embedded`, or uvicorn's command line of the distributed
stack), since uvicorn's own proxy-header handling is what once let the header through."""

import random
import sys
import time
from pathlib import Path

import httpx
import pytest

from taskhub_common.testing import REDIS_HOST
from tests.e2e.stack import Process, Stack, free_port, uvicorn

# It starts stacks of its own within the test: on a loaded machine that takes minutes.
pytestmark = pytest.mark.timeout(600)

# A budget of its own: no other test counts against it.
BUDGET = "3/minute"
ATTEMPTS = 6


def login_statuses(base_url: str) -> list[int]:
    statuses = []
    for _ in range(ATTEMPTS):
        forged = f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"
        response = httpx.post(
            f"{base_url}/api/auth/login",
            json={"email": "nobody@example.com", "password": "whatever1"},
            headers={"X-Forwarded-For": forged},
            timeout=30,
        )
        statuses.append(response.status_code)
    return statuses


def assert_budget_holds(statuses: list[int]) -> None:
    # Before: every attempt reached identity (no 429 at all). The counter may already hold
    # attempts of an earlier run within the minute, so only the shape is asserted.
    assert 429 in statuses, statuses
    first_refused = statuses.index(429)
    assert first_refused <= 3
    assert statuses[first_refused:] == [429] * (ATTEMPTS - first_refused)


def test_embedded_gateway_ignores_forwarded_for_from_untrusted_peers(tmp_path: Path) -> None:
    stack = Stack(
        "embedded",
        tmp_path,
        extra_env={"ENVIRONMENT": "test", "TRUSTED_PROXIES": "", "RATE_LIMIT_AUTH": BUDGET},
    )
    base_url = stack.start()
    try:
        statuses = login_statuses(base_url)
    finally:
        assert stack.stop() == [0]
    assert_budget_holds(statuses)


def test_distributed_gateway_ignores_forwarded_for_from_untrusted_peers(tmp_path: Path) -> None:
    """The gateway process alone, as the distributed stack runs it: identity is not there (the
    login is a 503), but the budget is counted before any upstream is asked."""
    port = free_port()
    gateway = Process(
        "gateway",
        uvicorn(sys.executable, "gateway.app:create_app", port),
        {
            "ENVIRONMENT": "test",
            "TRUSTED_PROXIES": "",
            "RATE_LIMIT_AUTH": BUDGET,
            "REDIS_HOST": REDIS_HOST,
            "IDENTITY_URL": f"http://127.0.0.1:{free_port()}",
        },
        tmp_path / "gateway.log",
    )
    gateway.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/health/live", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the gateway did not start:\n{gateway.log_tail()}")
                time.sleep(0.2)
        statuses = login_statuses(base_url)
    finally:
        assert gateway.stop() == 0
    assert_budget_holds(statuses)
    assert set(statuses) <= {503, 429}
