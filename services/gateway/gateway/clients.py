"""Who the caller is: the client IP and scheme (X-Forwarded-For and X-Forwarded-Proto believed
only from trusted proxies) and the rate-limit key (the user for authenticated calls, the IP for
anonymous ones).

uvicorn runs with its own proxy-header handling off (it would trust 127.0.0.1 and rewrite the
peer before this code sees it): the peer here is the real one.
"""

import functools
import ipaddress
import uuid

from starlette.requests import HTTPConnection


def _peer(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


def client_ip(request: HTTPConnection) -> str:
    peer = _peer(request)
    trusted = request.app.state.trusted_networks
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",")]
    # Walk from the nearest hop back; the first address not of our own proxies is the client.
    for hop in reversed([*[hop for hop in forwarded if hop], peer]):
        if not _in(hop, trusted):
            return hop
    return peer


def client_scheme(request: HTTPConnection) -> str:
    """http or https as the client used it: a trusted proxy's X-Forwarded-Proto, else ours."""
    trusted = request.app.state.trusted_networks
    if not trusted:
        return request.scope["scheme"]
    forwarded = request.headers.get("x-forwarded-proto", "").strip().lower()
    if forwarded in ("http", "https") and _in(_peer(request), trusted):
        return forwarded
    return request.scope["scheme"]


def rate_limit_key(request: HTTPConnection) -> str:
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return user_key(principal.user_id)
    return ip_key(request)


@functools.lru_cache(maxsize=4096)
def user_key(user_id: uuid.UUID) -> str:
    """A user's rate-limit key, remembered: a UUID is written out anew on every str()."""
    return f"user:{user_id}"


def ip_key(request: HTTPConnection) -> str:
    return f"ip:{client_ip(request)}"


def _in(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
