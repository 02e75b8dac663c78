"""The routing table: which service owns which public path."""

import re
from dataclasses import dataclass, field

from gateway.settings import GatewaySettings


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
            "identity",
            settings.IDENTITY_URL,
            ("/api/auth/", "/.well-known/jwks.json"),
            "identity.app:create_app",
        ),
        Upstream("tasks", settings.TASKS_URL, ("/api/tasks/",), "tasks.app:create_app"),
        Upstream(
            "comments",
            settings.COMMENTS_URL,
            (),
            "comments.app:create_app",
            (re.compile(r"/api/tasks/[^/]+/comments(/.*)?"),),
        ),
        Upstream(
            "files",
            settings.FILES_URL,
            (),
            "files.app:create_app",
            (re.compile(r"/api/tasks/[^/]+/files(/.*)?"),),
        ),
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
