"""Authentication of service-to-service calls on `/internal/*` (never routed by the gateway).

Every service shares SECRET_KEY; the service token is derived from it, so no extra secret has
to be distributed, and it never equals the secret itself.
"""

import hashlib
import hmac
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
