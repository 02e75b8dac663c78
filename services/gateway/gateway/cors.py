"""CORS for the gateway: Starlette's middleware, with a short way for a request that carries
no `Origin` (no browser's cross-origin call, which is most of the traffic from an API client).
Such an answer only needs `Vary: Origin`, so that a cache never serves it to a cross-origin
call; Starlette reaches the same by reading the request's and the answer's headers into
header objects on every request."""

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from gateway.settings import GatewaySettings


def cors_options(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "allow_origins": settings.cors_origins,
        # Tokens travel in headers, not cookies; credentials with a wildcard would let any
        # site read responses.
        "allow_credentials": "*" not in settings.cors_origins,
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": ["X-Request-ID", "Retry-After", "X-Total-Count", "X-Missing-Parts"],
    }


class Cors(CORSMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await super().__call__(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A field of its own: Vary is a list, and two fields read as one joined by a
                # comma (RFC 9110, 5.3).
                message["headers"] = [*message.get("headers", ()), (b"vary", b"Origin")]
            await send(message)

        await self.app(scope, receive, send_with_vary)
