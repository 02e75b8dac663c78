"""The routing table: which service owns which public path."""

import re
from dataclasses import dataclass, field

from gateway.settings import GatewaySettings
from taskhub_common.registry import SERVICES


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    # Public path prefixes this service serves.
    prefixes: tuple[str, ...]
    # The service's app factory, mounted in-process in the embedded mode.
    app_factory: str
    # Paths nested in another service's area (/api/tasks/{id}/comments); checked first.
    patterns: tuple[re.Pattern[str], ...] = field(default=())


@dataclass(frozen=True)
class PublicRoute:
    """A route the gateway passes through without an access token."""

    method: str
    path: str


PUBLIC_ROUTES = {
    PublicRoute("POST", "/api/auth/register"),
    PublicRoute("POST", "/api/auth/login"),
    PublicRoute("POST", "/api/auth/refresh"),
    PublicRoute("GET", "/.well-known/jwks.json"),
}


def upstreams(settings: GatewaySettings) -> list[Upstream]:
    return [
        Upstream(
            entry.name,
            getattr(settings, entry.url_setting),
            entry.prefixes,
            entry.app_factory,
            entry.compiled_patterns(),
        )
        for entry in SERVICES
    ]


def find_upstream(table: list[Upstream], path: str) -> Upstream | None:
    for upstream in table:
        if any(pattern.fullmatch(path) for pattern in upstream.patterns):
            return upstream
    for upstream in table:
        if any(
            path.startswith(prefix) or path == prefix.rstrip("/") for prefix in upstream.prefixes
        ):
            return upstream
    return None


def is_public(method: str, path: str) -> bool:
    return PublicRoute(method, path.rstrip("/") or "/") in PUBLIC_ROUTES
