"""Rate limits: counted in Redis, so every gateway replica shares them, or in memory where
there is no Redis (the embedded mode) or while it is unreachable.

limits' Redis storage increments the counter and sets its expiry in one Lua script, on the async
Redis client, so a slow Redis never blocks the loop. A caller sending fast does not cost a round
trip per request (decision 0047): a replica takes several hits of the caller's budget at once
(a block) and hands them out from memory for at most BLOCK_SECONDS. A block is counted in Redis
when taken, so the replicas together never let more through than the limit; what a block has
left when it lapses is dropped, which can only make a caller be refused a little early. Blocks
start at one hit (a caller at human speed makes one round trip per request, as before), double
while they run out before they lapse, and stay within an eighth of what the budget has left.
"""

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.errors import StorageError

from taskhub_common.errors import AppError

logger = logging.getLogger(__name__)

# After Redis failed, count in memory this long before trying it again, so a dead Redis costs
# one failed call every few seconds instead of a timeout on every request.
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
# Hits of a caller's budget a replica may take at once, and how long it may hand them out.
MAX_BLOCK = 64
BLOCK_SECONDS = 1.0
# Callers with a block in memory; past this, lapsed blocks go (and if need be all of them).
MAX_BLOCKS = 10_000
# How often the counters in memory drop the windows that have ended.
SWEEP_SECONDS = 60.0


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(f"Rate limit exceeded: {limit}", headers={"Retry-After": str(retry_after)})


@dataclass
class Block:
    """Hits of one caller's budget, counted in Redis already, not yet handed out."""

    left: int
    size: int  # of the last reservation
    until: float  # monotonic; what is left then is dropped
    count: int  # the Redis counter after the last reservation


@dataclass(slots=True)
class Window:
    ends: float  # epoch seconds
    hits: int = 0


class MemoryCounters:
    """Fixed windows counted in this process. limits' MemoryStorage starts a task on nearly
    every hit to expire old counters, walking all of them: a cost per request that grows with
    the number of callers. Here a window ends when its counter is next read, and the ended
    ones are dropped once a SWEEP_SECONDS."""

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}
        self._next_sweep = 0.0

    def hit(self, limit: RateLimitItem, key: str) -> tuple[bool, float]:
        """Whether this hit is within the limit, and when the key's window ends."""
        now = time.time()
        if now >= self._next_sweep:
            self._windows = {k: w for k, w in self._windows.items() if w.ends > now}
            self._next_sweep = now + SWEEP_SECONDS
        window = self._windows.get(key)
        if window is None or window.ends <= now:
            window = self._windows[key] = Window(now + limit.get_expiry())
        window.hits += 1
        return window.hits <= limit.amount, window.ends


class RateLimiter:
    def __init__(self, redis_url: str | None) -> None:
        self.memory = MemoryCounters()
        self.redis = (
            RedisStorage(
                f"async+{redis_url}",
                implementation="redispy",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            if redis_url
            else None
        )
        self._redis_down_until = 0.0
        self._blocks: dict[str, Block] = {}

    async def hit(self, limit: RateLimitItem, *identifiers: str) -> None:
        """Count one request; RateLimited (429 with Retry-After) when it is over the limit."""
        key = storage_key(limit, *identifiers)
        if self.redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                if not await self._hit_in_blocks(self.redis, limit, key):
                    raise RateLimited(limit, await _seconds_until_reset(self.redis, limit, key))
                return
            except StorageError:
                logger.warning("rate-limit storage unreachable; counting in memory", exc_info=True)
                self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        allowed, window_ends = self.memory.hit(limit, key)
        if not allowed:
            raise RateLimited(limit, _seconds_until(window_ends))

    async def _hit_in_blocks(self, redis: RedisStorage, limit: RateLimitItem, key: str) -> bool:
        now = time.monotonic()
        block = self._blocks.get(key)
        if block is not None and now < block.until:
            if block.left > 0:
                block.left -= 1
                return True
            # Used up before it lapsed: a caller this fast gets a larger block.
            size = min(block.size * 2, MAX_BLOCK, max(1, (limit.amount - block.count) // 8))
        else:
            size = 1
        count = await redis.incr(key, limit.get_expiry(), amount=size)
        # The part of this reservation within the limit (all of it, but near the end).
        granted = min(size, limit.amount - (count - size))
        if granted <= 0:
            self._blocks.pop(key, None)
            return False
        now = time.monotonic()
        current = self._blocks.get(key)
        # Another request of this caller may have taken a block meanwhile: keep its hits too.
        kept = current.left if current is not None and now < current.until else 0
        if len(self._blocks) >= MAX_BLOCKS and key not in self._blocks:
            self._drop_lapsed(now)
        self._blocks[key] = Block(kept + granted - 1, size, now + BLOCK_SECONDS, count)
        return True

    def _drop_lapsed(self, now: float) -> None:
        """Dropping a block only wastes hits already counted: never lets a caller through."""
        self._blocks = {key: block for key, block in self._blocks.items() if now < block.until}
        if len(self._blocks) >= MAX_BLOCKS:
            self._blocks.clear()


@functools.lru_cache(maxsize=4096)
def storage_key(limit: RateLimitItem, *identifiers: str) -> str:
    """limits' counter key for a limit and a caller, remembered: the same callers come again and
    again, and building it (every part escaped) cost more than counting a hit in memory."""
    return limit.key_for(*identifiers)


async def _seconds_until_reset(redis: RedisStorage, limit: RateLimitItem, key: str) -> int:
    try:
        reset_at = await redis.get_expiry(key)
    except StorageError:
        return limit.get_expiry()  # storage unreachable: a whole window is a safe answer
    return _seconds_until(reset_at)


def _seconds_until(reset_at: float) -> int:
    """A Retry-After: whole seconds until `reset_at` (epoch seconds), at least one."""
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
