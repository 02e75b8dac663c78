"""The gateway's signed claim that a task was just seen live (the composed task view)."""

import time
import uuid
from types import SimpleNamespace

from starlette.requests import Request

from taskhub_common.internal_auth import TASK_SEEN_SECONDS, task_seen, task_seen_claim

SECRET = "a-secret-of-the-suite"


def request_with(claim: str | None, secret: str = SECRET) -> Request:
    headers = [(b"x-task-seen", claim.encode())] if claim is not None else []
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(SECRET_KEY=secret)))
    return Request({"type": "http", "headers": headers, "app": app})


def test_a_fresh_claim_for_the_task_holds() -> None:
    task_id = uuid.uuid4()
    assert task_seen(request_with(task_seen_claim(SECRET, str(task_id))), task_id)


def test_a_claim_holds_for_its_task_only() -> None:
    claim = task_seen_claim(SECRET, str(uuid.uuid4()))
    assert not task_seen(request_with(claim), uuid.uuid4())


def test_an_expired_claim_fails() -> None:
    task_id = uuid.uuid4()
    claim = task_seen_claim(SECRET, str(task_id), now=time.time() - TASK_SEEN_SECONDS - 1)
    assert not task_seen(request_with(claim), task_id)


def test_a_claim_signed_with_another_secret_fails() -> None:
    task_id = uuid.uuid4()
    claim = task_seen_claim("another-secret", str(task_id))
    assert not task_seen(request_with(claim), task_id)


def test_a_missing_or_malformed_claim_fails() -> None:
    task_id = uuid.uuid4()
    expires = int(time.time()) + 5
    for claim in (None, "", "garbage", f"{expires}.", f"{expires}.{'0' * 64}", "-1.abc"):
        assert not task_seen(request_with(claim), task_id), claim
