"""Authentication of service-to-service calls on `/internal/*` (never routed by the gateway).

Every service shares SECRET_KEY; the service token is derived from it, so no extra secret has
to be distributed, and it never equals the secret itself.
"""

import hashlib
import hmac
import time
import uuid
from typing import Annotated

from fastapi import Depends, Header, Request

from taskhub_common.errors import NotAuthenticated


def service_token(secret_key: str) -> str:
    return hmac.new(secret_key.encode(), b"taskhub-internal-api", hashlib.sha256).hexdigest()


def service_headers(secret_key: str) -> dict[str, str]:
    return {"Authorization": f"Service {service_token(secret_key)}"}


async def require_service(request: Request, authorization: Annotated[str, Header()] = "") -> None:
    scheme, _, token = authorization.partition(" ")
    expected = service_token(request.app.state.settings.SECRET_KEY)
    if scheme != "Service" or not hmac.compare_digest(token, expected):
        raise NotAuthenticated("A service token is required")


ServiceCaller = Annotated[None, Depends(require_service)]


# The composed task view: the gateway has just had the task from tasks, live, and says so to
# comments and files, which then need not ask tasks again. The claim is signed with SECRET_KEY
# (no client can make one) and names the task and an expiry a few seconds ahead (a captured
# one is worth nothing elsewhere or later).
TASK_SEEN_HEADER = "X-Task-Seen"
TASK_SEEN_SECONDS = 10


def task_seen_claim(secret_key: str, task_id: str, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + TASK_SEEN_SECONDS)
    return f"{expires}.{_task_seen_signature(secret_key, task_id, expires)}"


def task_seen(request: Request, task_id: uuid.UUID) -> bool:
    """True when the request carries a valid, unexpired claim that this task is live."""
    expires, _, signature = request.headers.get(TASK_SEEN_HEADER, "").partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    secret_key = request.app.state.settings.SECRET_KEY
    expected = _task_seen_signature(secret_key, str(task_id), int(expires))
    return hmac.compare_digest(signature, expected)


def _task_seen_signature(secret_key: str, task_id: str, expires: int) -> str:
    message = f"taskhub-task-seen:{task_id}:{expires}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


async def _task_seen_dependency(request: Request, task_id: uuid.UUID) -> bool:
    return task_seen(request, task_id)


# For routes under /api/tasks/{task_id}/…: whether the gateway vouched for the task.
TaskSeen = Annotated[bool, Depends(_task_seen_dependency)]
