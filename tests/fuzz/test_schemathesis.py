"""schemathesis against the merged OpenAPI of a running stack, through the gateway, as a
signed-in user: every generated request must be answered as the document says (no 5xx, a
documented status, content type, headers and body schema). Deterministic: the same cases on
every run. `make fuzz` runs this file alone."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from taskhub_common.testing import bearer, new_user
from tests.e2e.stack import Stack

# Decision 0056 says which of schemathesis' checks are on, and why the others are not.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "missing_required_header",
    "negative_data_rejection",
    "allow_header_conformance",
)
CASES_PER_OPERATION = 15
MIN_CASES = 1_000
LOGOUT = "/api/auth/logout"

# About a minute on an idle machine; several when two cores are shared with other suites.
pytestmark = pytest.mark.timeout(900)


def signed_in(stack: Stack) -> str:
    """A new user's Authorization header value."""
    response = httpx.post(f"{stack.base_url}/api/auth/register", json=new_user(), timeout=30)
    assert response.status_code == 201, response.text
    return bearer(response.json()["access_token"])["Authorization"]


def schemathesis(stack: Stack, report: Path, *options: str) -> dict:
    """One `schemathesis run` over the stack's merged OpenAPI; its JSON report."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{stack.base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--header",
        f"Authorization: {signed_in(stack)}",
        "--max-examples",
        str(CASES_PER_OPERATION),
        "--generation-deterministic",
        "--request-timeout",
        "30",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *options,
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    return json.loads(report.read_text())


def test_every_operation_answers_as_documented(stack: Stack, tmp_path: Path) -> None:
    # Logout (without a body) ends every session of its user, the fuzzer's token with them;
    # it runs on its own below, with a user of its own.
    everything = schemathesis(stack, tmp_path / "all.json", "--exclude-path", LOGOUT)
    logout = schemathesis(stack, tmp_path / "logout.json", "--include-path", LOGOUT)
    for report in (everything, logout):
        assert report["complete"], report["stop_reason"]
        assert report["failures"] == [] and report["errors"] == [], report
    assert everything["operations"]["tested"] == everything["operations"]["selected"]
    generated = everything["test_cases"]["generated"] + logout["test_cases"]["generated"]
    assert generated >= MIN_CASES, generated
