"""Access-token verification against identity's JWKS, keys chosen by `kid`."""

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskhub_common.errors import NotAuthenticated, ServiceUnavailable
from taskhub_common.revocation import DenyList

ASYMMETRIC_ALGORITHMS = ("EdDSA", "RS256", "ES256")
MIN_FETCH_INTERVAL = 5.0


@dataclass(frozen=True)
class Principal:
    """Who is calling, as the verified access token says."""

    user_id: uuid.UUID
    token_id: str
    expires_at: int
    # The bearer token itself, for calls made on the caller's behalf; kept out of reprs and logs.
    token: str = field(repr=False)


class KeySource(Protocol):
    async def get_key(self, kid: str) -> jwt.PyJWK: ...


class JwksKeySource:
    """Fetches the JWKS, caches it, and fetches again when a token names an unknown `kid`
    (a key rotation), at most once every few seconds."""

    def __init__(
        self, client: httpx.AsyncClient, path: str = "/.well-known/jwks.json", ttl: float = 300
    ) -> None:
        self.client = client
        self.path = path
        self.ttl = ttl
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -ttl
        # Any fetch, failed ones too: no caller fetches again within MIN_FETCH_INTERVAL of it,
        # so neither unknown `kid`s nor a hanging identity can make every request fetch.
        self._attempted_at = -MIN_FETCH_INTERVAL
        self._lock = asyncio.Lock()

    async def get_key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys or time.monotonic() - self._fetched_at > self.ttl:
            await self._refresh()
        if not self._keys:
            raise ServiceUnavailable("Identity keys are unavailable")
        try:
            return self._keys[kid]
        except KeyError:
            raise NotAuthenticated() from None

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._attempted_at < MIN_FETCH_INTERVAL:
                return
            self._attempted_at = time.monotonic()
            try:
                response = await self.client.get(self.path)
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError):
                return  # keep serving with the keys we have, if any
            self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
            self._fetched_at = time.monotonic()


class TokenVerifier:
    """Checks an access token's signature and claims, and remembers the tokens it accepted until
    they expire: the same token arrives with every request of a session, and an EdDSA check is
    the dearest step of a cached read. A revoked token (logout) is refused by the deny list,
    which is asked on every request, remembered token or not. Refusals are never remembered;
    the cache is keyed by the token's SHA-256 and bounded, the oldest entry making room."""

    def __init__(
        self,
        keys: KeySource,
        audience: str,
        issuer: str,
        deny_list: DenyList | None = None,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.deny_list = deny_list
        self.audience = audience
        self.issuer = issuer
        self.max_cached = max_cached
        self.clock = clock
        self._accepted: dict[bytes, Principal] = {}

    async def verify(self, token: str, ask_deny_list: bool = True) -> Principal:
        """The token's principal; NotAuthenticated if it is bad, expired or (unless told not to
        ask, by a caller that does not decide on it: the gateway's pass-through) revoked."""
        principal = await self._verified(token)
        if (
            ask_deny_list
            and self.deny_list is not None
            and await self.deny_list.is_denied(principal.token_id)
        ):
            raise NotAuthenticated("Token revoked")
        return principal

    async def _verified(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        principal = self._accepted.get(digest)
        if principal is not None and principal.token == token:
            if self.clock() < principal.expires_at:
                return principal
            del self._accepted[digest]
            raise NotAuthenticated()  # expired since it was checked
        principal = await self._check(token)
        if len(self._accepted) >= self.max_cached:
            del self._accepted[next(iter(self._accepted))]
        self._accepted[digest] = principal
        return principal

    async def _check(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise NotAuthenticated() from None
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("alg") not in ASYMMETRIC_ALGORITHMS:
            raise NotAuthenticated()
        key = await self.keys.get_key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
            )
            if claims.get("typ") != "access":
                raise NotAuthenticated()
            return Principal(uuid.UUID(claims["sub"]), claims["jti"], claims["exp"], token)
        except (jwt.InvalidTokenError, ValueError):
            raise NotAuthenticated() from None


bearer_scheme = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated()
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify(credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
