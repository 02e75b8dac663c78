"""Response caches: Redis in the distributed mode, process memory in the embedded one.

Entries are invalidated without key scans: every entry records the generation it was made in,
and a write bumps the namespace's generation, so older entries are never served again and
expire on their own. A read is one round trip (the generation and the entry together). A cache
that fails (Redis down) is skipped, never an error: requests are served from the database.
"""

import logging
import time
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


class CacheStore(Protocol):
    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def incr(self, key: str) -> int: ...
    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._counters: dict[str, int] = {}

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        if key in self._counters:
            return str(self._counters[key]).encode()
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; entries are cheap to rebuild
        self._entries[key] = (time.monotonic() + ttl, value)

    async def incr(self, key: str) -> int:
        self._counters[key] = self._counters.get(key, 0) + 1
        self._entries.clear()  # one process: old generations can go at once
        return self._counters[key]

    async def close(self) -> None:
        self._entries.clear()


class RedisStore:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, health_check_interval=30
        )

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self.client.mget(keys)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self.client.set(key, value, ex=ttl)

    async def incr(self, key: str) -> int:
        return await self.client.incr(key)

    async def close(self) -> None:
        await self.client.aclose()


def make_store(redis_url: str | None) -> CacheStore:
    return RedisStore(redis_url) if redis_url else MemoryStore()


class GenerationalCache:
    """One namespace of cached responses, all dropped together by `invalidate()`."""

    def __init__(self, store: CacheStore, namespace: str, ttl: int) -> None:
        self.store = store
        self.namespace = namespace
        self.ttl = ttl
        # Set when an invalidation could not reach the store: until one does, this process
        # reads nothing from the cache, since entries there may predate a write.
        self._suspect = False

    async def get(self, key: str) -> tuple[bytes | None, bytes]:
        """The cached value (or None) and the generation to pass to `set` for a value computed
        now: if a write bumps the generation meanwhile, that value is born stale, never served."""
        (value,), generation = await self.get_many([key])
        return value, generation

    async def get_many(self, keys: list[str]) -> tuple[list[bytes | None], bytes]:
        """Several entries and the generation, in one round trip."""
        misses: list[bytes | None] = [None] * len(keys)
        if self._suspect and not await self.invalidate():
            return misses, b""
        try:
            found = await self.store.get_many(self._keys_with_generation(keys))
        except (RedisError, OSError):
            logger.warning("cache unavailable; serving from the database")
            return misses, b""
        return self._current(found)

    def _keys_with_generation(self, keys: list[str]) -> list[str]:
        return [self._generation_key, *(self._key(key) for key in keys)]

    @staticmethod
    def _current(found: list[bytes | None]) -> tuple[list[bytes | None], bytes]:
        """The entries made in the generation found with them, and that generation."""
        generation = found[0] or b"0"
        values = []
        for entry in found[1:]:
            made_in, _, value = (entry or b"").partition(b":")
            values.append(value if entry is not None and made_in == generation else None)
        return values, generation

    async def set(self, key: str, value: bytes, generation: bytes) -> None:
        if not generation or self._suspect:
            return
        try:
            await self.store.set(self._key(key), generation + b":" + value, self.ttl)
        except (RedisError, OSError):
            logger.warning("cache unavailable; response not cached")

    async def invalidate(self) -> bool:
        try:
            await self.store.incr(self._generation_key)
        except (RedisError, OSError):
            logger.warning("cache invalidation failed; bypassing the cache until it works")
            self._suspect = True
            return False
        self._suspect = False
        return True

    @property
    def _generation_key(self) -> str:
        return f"{self.namespace}:generation"

    def _key(self, key: str) -> str:
        return f"{self.namespace}:entry:{key}"


# Without Redis (the embedded mode) the gateway and the part services share this process, and
# so this store: the generation a part service bumps is the one the gateway reads.
_PROCESS_PARTS = MemoryStore()


async def get_in_each(
    caches: list[GenerationalCache], key: str
) -> list[tuple[bytes | None, bytes]]:
    """`key` in each of several caches kept in one store, with each one's generation (what
    `get` answers), in one round trip for them all."""
    stores = {id(cache.store) for cache in caches}
    if len(stores) > 1 or any(cache._suspect for cache in caches):
        return [await cache.get(key) for cache in caches]
    if not caches:
        return []
    keys = [cache._keys_with_generation([key]) for cache in caches]
    try:
        found = await caches[0].store.get_many([name for pair in keys for name in pair])
    except (RedisError, OSError):
        logger.warning("cache unavailable; serving from the database")
        return [(None, b"")] * len(caches)
    answers = []
    for index in range(len(caches)):
        (value,), generation = GenerationalCache._current(found[2 * index : 2 * index + 2])
        answers.append((value, generation))
    return answers


def task_part_cache(
    redis_url: str | None,
    db_name: str,
    part: str,
    ttl: int = 300,
    store: CacheStore | None = None,
) -> GenerationalCache:
    """The cache of one part of the composed task view (`comments`, `files`; decision 0044):
    the gateway keeps each task's list of that part in it, stamped with the generation that the
    part's own service bumps after every commit that changes one of its lists. The gateway
    keeps every part in one store (`part_store`), so a composed read looks them up at once."""
    return GenerationalCache(store or part_store(redis_url), f"{db_name}:task-parts:{part}", ttl)


def part_store(redis_url: str | None) -> CacheStore:
    return RedisStore(redis_url) if redis_url else _PROCESS_PARTS
