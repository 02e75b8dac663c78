"""Each user's live stream: an epoch, a sequence number per message, and a bounded history to
resume from. In Redis when REDIS_HOST is set (every gateway replica numbers a user's messages
alike), otherwise in the process's memory (the embedded mode: one process).

A message is stored as its JSON without `seq` (the body); `message_text` puts the seq in.
Appending is idempotent per event: every replica receives every event and appends it, and the
first one to do so gives it its seq, which the others get back (decision 0071).
"""

import secrets
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

# Users with a stream: the sorted set of when each last had a socket open.
RECENT_USERS_KEY = "live:users"
RECENT_USERS_CACHE_SECONDS = 1.0


def message_text(seq: int, body: str) -> str:
    """The message as sent: its body (a JSON object) with `seq` put first."""
    return f'{{"seq":{seq},{body[1:]}'


@dataclass(frozen=True)
class History:
    """What a user's stream holds after a point: `entries` as (seq, body), oldest first, or
    None when the point is gone (another epoch, trimmed away, or never reached)."""

    epoch: str
    head: int
    entries: list[tuple[int, str]] | None


class UserStreams(Protocol):
    async def open(self, user_id: uuid.UUID) -> tuple[str, int]:
        """Mark the user as having a stream (a socket opened); its (epoch, head seq)."""
        ...

    async def touch(self, user_ids: list[uuid.UUID]) -> None:
        """Keep these users' streams (their sockets are still open)."""
        ...

    async def recent_users(self) -> list[uuid.UUID]:
        """Users who had a socket open within the history window."""
        ...

    async def append(
        self, user_ids: list[uuid.UUID], event_id: str, body: str
    ) -> dict[uuid.UUID, int]:
        """Add one event's message to each user's stream; its seq in each."""
        ...

    async def read(self, user_id: uuid.UUID, epoch: str | None, after: int) -> History: ...


def new_epoch() -> str:
    return secrets.token_hex(8)


@dataclass
class _Stream:
    epoch: str
    seq: int = 0
    # (seq, appended at, body)
    entries: deque[tuple[int, float, str]] = field(default_factory=deque)
    seqs_by_event: OrderedDict[str, int] = field(default_factory=OrderedDict)


class MemoryStreams:
    """The embedded mode's streams: one process numbers everything, so no locking across
    processes; the same bounds as in Redis (count and age)."""

    def __init__(self, max_messages: int, max_seconds: int) -> None:
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self._streams: dict[uuid.UUID, _Stream] = {}
        self._last_seen: dict[uuid.UUID, float] = {}

    def _stream(self, user_id: uuid.UUID) -> _Stream:
        stream = self._streams.get(user_id)
        if stream is None:
            stream = self._streams[user_id] = _Stream(new_epoch())
        return stream

    async def open(self, user_id: uuid.UUID) -> tuple[str, int]:
        await self.touch([user_id])
        stream = self._stream(user_id)
        return stream.epoch, stream.seq

    async def touch(self, user_ids: list[uuid.UUID]) -> None:
        now = time.time()
        for user_id in user_ids:
            self._last_seen[user_id] = now
        # Forget users (and their history) gone for longer than the window.
        horizon = now - self.max_seconds
        for user_id in [user for user, seen in self._last_seen.items() if seen < horizon]:
            del self._last_seen[user_id]
            self._streams.pop(user_id, None)

    async def recent_users(self) -> list[uuid.UUID]:
        horizon = time.time() - self.max_seconds
        return [user for user, seen in self._last_seen.items() if seen >= horizon]

    async def append(
        self, user_ids: list[uuid.UUID], event_id: str, body: str
    ) -> dict[uuid.UUID, int]:
        now = time.time()
        seqs = {}
        for user_id in user_ids:
            stream = self._stream(user_id)
            seq = stream.seqs_by_event.get(event_id)
            if seq is None:
                stream.seq += 1
                seq = stream.seq
                stream.entries.append((seq, now, body))
                stream.seqs_by_event[event_id] = seq
                while len(stream.entries) > self.max_messages:
                    stream.entries.popleft()
                while len(stream.seqs_by_event) > self.max_messages:
                    stream.seqs_by_event.popitem(last=False)
            seqs[user_id] = seq
        return seqs

    async def read(self, user_id: uuid.UUID, epoch: str | None, after: int) -> History:
        stream = self._stream(user_id)
        horizon = time.time() - self.max_seconds
        entries = [(seq, body) for seq, at, body in stream.entries if seq > after and at >= horizon]
        complete = _complete(stream.epoch, stream.seq, epoch, after, entries)
        return History(stream.epoch, stream.seq, complete)


def _complete(
    current_epoch: str, head: int, epoch: str | None, after: int, entries: list[tuple[int, str]]
) -> list[tuple[int, str]] | None:
    """The entries after `after` if they are all there, else None (resync)."""
    if epoch != current_epoch or after > head or after < 0:
        return None
    if after < head and (not entries or entries[0][0] != after + 1):
        return None
    return entries


# KEYS: for each user, their epoch, seq counter, stream and event ids (four keys a user).
# ARGV: event id, body, max messages, ttl seconds, a fresh epoch, now (ms).
# One call per event for all its users: the body crosses the wire once. A stream whose keys
# expired starts again under a new epoch, so a client's old seq is never taken for a new one.
# An event already appended keeps its seq: every replica appends every event.
_APPEND = """
local seqs = {}
for u = 1, #KEYS, 4 do
  local epoch_key, seq_key, stream_key, ids_key = KEYS[u], KEYS[u + 1], KEYS[u + 2], KEYS[u + 3]
  if redis.call('SET', epoch_key, ARGV[5], 'NX') then
    redis.call('DEL', seq_key, stream_key, ids_key)
  end
  local seq = redis.call('ZSCORE', ids_key, ARGV[1])
  if seq then
    seq = tonumber(seq)
  else
    seq = redis.call('INCR', seq_key)
    redis.call('XADD', stream_key, 'MAXLEN', ARGV[3], seq .. '-0', 'b', ARGV[2], 't', ARGV[6])
    redis.call('ZADD', ids_key, seq, ARGV[1])
    redis.call('ZREMRANGEBYRANK', ids_key, 0, -tonumber(ARGV[3]) - 1)
  end
  for i = u, u + 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
  seqs[#seqs + 1] = seq
end
return seqs
"""

# KEYS and fresh epoch as above; ARGV[2] ttl seconds. The stream's (epoch, head).
_OPEN = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""


def _keys(user_id: uuid.UUID) -> list[str]:
    # One hash slot per user: a Redis Cluster could run the script for each slot's users.
    tag = f"live:{{{user_id}}}"
    return [f"{tag}:epoch", f"{tag}:seq", f"{tag}:stream", f"{tag}:events"]


class RedisStreams:
    """Streams in Redis: a stream per user with ids `<seq>-0`, its counter (INCR), its epoch
    and the seqs of its events, all expiring together after the history window."""

    def __init__(self, redis: Redis, max_messages: int, max_seconds: int) -> None:
        self.redis = redis
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self._append = redis.register_script(_APPEND)
        self._recent: list[uuid.UUID] = []
        self._opened_here: dict[uuid.UUID, float] = {}
        self._recent_read_at = -RECENT_USERS_CACHE_SECONDS
        self._open = redis.register_script(_OPEN)

    async def open(self, user_id: uuid.UUID) -> tuple[str, int]:
        await self.touch([user_id])
        # Known here at once, not after the next read of the list (which a read in flight
        # could miss): a user whose socket closes within the second still gets what follows.
        self._opened_here[user_id] = time.time()
        epoch, seq = await self._open(keys=_keys(user_id), args=[new_epoch(), self.max_seconds])
        return epoch.decode(), int(seq)

    async def touch(self, user_ids: list[uuid.UUID]) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            if user_ids:
                pipe.zadd(RECENT_USERS_KEY, {str(user): now for user in user_ids})
            pipe.zremrangebyscore(RECENT_USERS_KEY, "-inf", now - self.max_seconds)
            await pipe.execute()

    async def recent_users(self) -> list[uuid.UUID]:
        """Read at most once a second (a round trip less per event): a user who opened a
        socket since is added by the replica that holds it (open())."""
        if time.monotonic() - self._recent_read_at > RECENT_USERS_CACHE_SECONDS:
            horizon = time.time() - self.max_seconds
            members = await self.redis.zrangebyscore(RECENT_USERS_KEY, horizon, "+inf")
            self._recent = [uuid.UUID(member.decode()) for member in members]
            self._recent_read_at = time.monotonic()
            self._opened_here = {
                user: at for user, at in self._opened_here.items() if at >= horizon
            }
        return list({*self._recent, *self._opened_here})

    async def append(
        self, user_ids: list[uuid.UUID], event_id: str, body: str
    ) -> dict[uuid.UUID, int]:
        if not user_ids:
            return {}
        keys = [key for user_id in user_ids for key in _keys(user_id)]
        now_ms = int(time.time() * 1000)
        args = [event_id, body, self.max_messages, self.max_seconds, new_epoch(), now_ms]
        seqs = await self._append(keys=keys, args=args)
        return {user: int(seq) for user, seq in zip(user_ids, seqs, strict=True)}

    async def read(self, user_id: uuid.UUID, epoch: str | None, after: int) -> History:
        epoch_key, seq_key, stream_key, _ = _keys(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(epoch_key)
            pipe.get(seq_key)
            pipe.xrange(stream_key, min=f"{max(after, 0) + 1}-0", max="+")
            current, head, rows = await pipe.execute()
        current_epoch = current.decode() if current else ""
        head = int(head or 0)
        horizon_ms = (time.time() - self.max_seconds) * 1000
        entries = [
            (int(entry_id.decode().split("-")[0]), fields[b"b"].decode())
            for entry_id, fields in rows
            if int(fields[b"t"]) >= horizon_ms
        ]
        return History(current_epoch, head, _complete(current_epoch, head, epoch, after, entries))
