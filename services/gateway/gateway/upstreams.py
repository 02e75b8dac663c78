"""The routing table: which service owns which public path."""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

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


class PublicRoute(NamedTuple):
    """A route the gateway passes through without an access token. (A tuple: asked about on
    every request, and a tuple hashes in C where a dataclass hashes in Python.)"""

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


# Paths whose owner is remembered: a session asks about the same few paths again and again.
REMEMBERED_PATHS = 4096
# A control character, or a `.` or `..` segment.
_UNROUTABLE = re.compile(r"[\x00-\x1f\x7f]|(?:^|/)\.\.?(?:/|$)")


class Owner(NamedTuple):
    upstream: Upstream
    path: str  # as routed


def owner_lookup(table: list[Upstream]) -> Callable[[str], Owner | None]:
    """`path -> (the service that owns it, the path as routed)`, None for a path that must not
    be routed or has no owner. Each answer is remembered: finding it walks every service's
    patterns, and a pass-through request asks first thing."""

    @functools.lru_cache(maxsize=REMEMBERED_PATHS)
    def lookup(path: str) -> Owner | None:
        routed = public_path(path)
        upstream = find_upstream(table, routed) if routed else None
        return None if upstream is None else Owner(upstream, routed)

    return lookup


def public_path(path: str) -> str | None:
    """The path as routed, or None for one that must not be: a `.` or `..` segment (the
    upstream URL would resolve it, e.g. /api/auth/../../internal/x) or a control character.
    The path arrives percent-decoded, so encoded forms are caught too. A trailing slash is
    dropped: the seed's SPA calls `/api/tasks/` where the services route `/api/tasks`."""
    if _UNROUTABLE.search(path):
        return None
    return path.rstrip("/") or "/"


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
