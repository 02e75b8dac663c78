"""Revoked access tokens: a deny list by `jti`, each entry kept until the token's `exp`.

Identity adds to it at logout and when a refresh-token family is revoked; every verifier
(`auth.TokenVerifier`) asks it on every request, past its cache of verified tokens. Shared by
all replicas through Redis when REDIS_HOST is set; otherwise one list per process, which in the
embedded mode is every service at once. See docs/decisions/0091-access-token-deny-list.md.
"""

import logging
import time
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from taskhub_common.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

KEY_PREFIX = "taskhub:denied-jti:"


class DenyList(Protocol):
    async def deny(self, tokens: dict[str, int]) -> None:
        """Deny each `jti` until its `exp` (Unix seconds)."""

    async def is_denied(self, jti: str) -> bool: ...

    async def close(self) -> None: ...


class InProcessDenyList:
    def __init__(self, clock=time.time) -> None:
        self.clock = clock
        self._until: dict[str, int] = {}

    async def deny(self, tokens: dict[str, int]) -> None:
        now = self.clock()
        # Expired entries go whenever some are added: the list holds live tokens only.
        self._until = {jti: exp for jti, exp in self._until.items() if exp > now}
        self._until.update({jti: exp for jti, exp in tokens.items() if exp > now})

    async def is_denied(self, jti: str) -> bool:
        exp = self._until.get(jti)
        return exp is not None and exp > self.clock()

    async def close(self) -> None:
        pass


class RedisDenyList:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=30
        )

    async def deny(self, tokens: dict[str, int]) -> None:
        now = int(time.time())
        live = {jti: exp for jti, exp in tokens.items() if exp > now}
        if not live:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for jti, exp in live.items():
                    pipe.set(KEY_PREFIX + jti, b"1", exat=exp)
                await pipe.execute()
        except RedisError as exc:
            # The revocation is refused as a whole (its transaction rolls back): a logout that
            # could not deny its tokens must not look done.
            raise ServiceUnavailable("The token deny list cannot be reached") from exc

    async def is_denied(self, jti: str) -> bool:
        try:
            return bool(await self.client.exists(KEY_PREFIX + jti))
        except RedisError:
            # Open, not closed: every request would fail with Redis. A revoked token then lives
            # at most until its exp, as it did before this list.
            logger.warning("token deny list unreachable; %s not checked", jti)
            return False

    async def close(self) -> None:
        await self.client.aclose()


# One per process: in the embedded mode, identity's denials reach every service this way.
_PROCESS_DENY_LIST = InProcessDenyList()


def make_deny_list(redis_url: str | None) -> DenyList:
    return RedisDenyList(redis_url) if redis_url else _PROCESS_DENY_LIST
