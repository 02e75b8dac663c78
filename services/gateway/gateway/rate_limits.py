"""Rate limits: counted in Redis, so every gateway replica shares them, or in memory where
there is no Redis (the embedded mode) or while it is unreachable.

One awaited round trip per request: limits' fixed window increments the counter and sets its
expiry in one Lua script, on the async Redis client, so a slow Redis never blocks the loop.
"""

import logging
import math
import time
from collections.abc import Awaitable, Callable

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError

from taskhub_common.errors import AppError

logger = logging.getLogger(__name__)

# After Redis failed, count in memory this long before trying it again, so a dead Redis costs
# one failed call every few seconds instead of a timeout on every request.
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(f"Rate limit exceeded: {limit}", headers={"Retry-After": str(retry_after)})


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        self.redis = (
            FixedWindowRateLimiter(
                RedisStorage(
                    f"async+{redis_url}",
                    implementation="redispy",
                    wrap_exceptions=True,
                    socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                    socket_timeout=REDIS_TIMEOUT_SECONDS,
                )
            )
            if redis_url
            else None
        )
        self._redis_down_until = 0.0

    async def hit(self, limit: RateLimitItem, *identifiers: str) -> None:
        """Count one request; RateLimited (429 with Retry-After) when it is over the limit."""
        limiter = self._current()
        try:
            allowed = await limiter.hit(limit, *identifiers)
        except StorageError:
            logger.warning("rate-limit storage unreachable; counting in memory", exc_info=True)
            self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            limiter = self.memory
            allowed = await limiter.hit(limit, *identifiers)
        if not allowed:
            raise RateLimited(limit, await _seconds_until_reset(limiter, limit, identifiers))

    def _current(self) -> FixedWindowRateLimiter:
        if self.redis is None or time.monotonic() < self._redis_down_until:
            return self.memory
        return self.redis


async def _seconds_until_reset(
    limiter: FixedWindowRateLimiter, limit: RateLimitItem, identifiers: tuple[str, ...]
) -> int:
    try:
        reset_at, _ = await limiter.get_window_stats(limit, *identifiers)
    except StorageError:
        return limit.get_expiry()  # storage unreachable: a whole window is a safe answer
    return max(1, math.ceil(reset_at - time.time()))


def rate_limit(
    limit: str, scope: str, key: Callable[[Request], str]
) -> Callable[[Request], Awaitable[None]]:
    """A route dependency counting each request against `limit`, in a counter per `scope` and
    per caller as `key` names it. Routes sharing a scope and limit share a budget."""
    item = parse(limit)

    async def check(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(item, scope, key(request))

    return check
