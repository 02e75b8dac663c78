"""The live log: every message the gateway sends, numbered once for all replicas and kept a
while for resuming. In Redis (a Redis Stream) when REDIS_HOST is set, so every replica numbers
alike; otherwise in the process's memory (the embedded mode: one process).

One log for every user (decision 0074): a message is stored once, as its JSON without `seq`
(the body), beside its audience (`gateway.live.audience`); `message_text` puts the seq in. The
seq is the message's position in the log: it grows with every message, so each user sees it
grow (not by one per message to them), and the log has no holes. Appending is idempotent per
event: every replica appends every event it receives, the first numbers it, the others get the
same seq back.

The log keeps the ids of `max_messages` events only (forgetting those that occurred first),
and the latest time at which a forgotten one occurred. An event whose id it does not know, and
which occurred no later than that, may have been numbered already (a replica lagging further
behind than the log is long receives it late): it is refused (seq None), never numbered
twice, and the hub tells the sockets concerned to resync (decision 0075). The times compared
are the events' own (`occurred_at`, the same on every replica), not clocks of two hosts.
"""

import heapq
import secrets
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Protocol
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis


def message_text(seq: int, body: str) -> str:
    """The message as sent: its body (a JSON object) with `seq` put first."""
    return f'{{"seq":{seq},{body[1:]}'


@dataclass(frozen=True)
class Message:
    """An event's message before the log numbers it: the event's id and the time it occurred
    (epoch seconds, the producer's clock), who may see it and its body."""

    event_id: str
    occurred_at: float
    audience: str
    body: str


@dataclass(frozen=True)
class Entry:
    """One message of the log: its seq, who may see it (an audience tag) and its body."""

    seq: int
    audience: str
    body: str


@dataclass(frozen=True)
class History:
    """What the log holds after a point, up to `head`: `entries` oldest first, or None when
    the point is gone (another epoch, trimmed away, older than the window, beyond the head)."""

    epoch: str
    head: int
    entries: list[Entry] | None


class LiveLog(Protocol):
    async def open(self) -> tuple[str, int]:
        """The log's (epoch, head seq), starting a new epoch if it has none."""
        ...

    async def keep(self) -> None:
        """Keep the log for another window (sockets are open)."""
        ...

    async def append(
        self, messages: list[Message], known: str | None = None, reached: float = 0.0
    ) -> tuple[str, list[int | None]]:
        """Add messages, in order; the epoch and each one's seq (an event appended before keeps
        its seq; one the log may have forgotten gets None). `known` is the epoch the caller
        appended in last and `reached` the latest time an event it appended occurred: if the
        log has started again since, events that occurred no later may have been numbered in
        the old epoch, and are refused like forgotten ones."""
        ...

    async def read(self, epoch: str | None, after: int, until: int | None = None) -> History:
        """The entries after `after` (up to `until`), if the log still holds all of them."""
        ...


def new_epoch() -> str:
    return secrets.token_hex(8)


def _complete(
    current_epoch: str,
    head: int,
    epoch: str | None,
    after: int,
    first: tuple[int, float] | None,
    horizon: float,
) -> bool:
    """Whether the log holds everything after `after`: the same epoch, a point not beyond the
    head, and (when something followed it) its next seq, `first` = (seq, time), still there
    and within the window. The log has no holes, so the next seq is the only one to check."""
    if epoch != current_epoch or after > head or after < 0:
        return False
    return after == head or (first is not None and first[0] == after + 1 and first[1] >= horizon)


class MemoryLog:
    """The embedded mode's log: one process numbers everything; the same bounds as in Redis
    (count and age)."""

    def __init__(self, max_messages: int, max_seconds: int) -> None:
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        self.epoch = new_epoch()
        self.head = 0
        # (seq, appended at, audience, body), seqs without holes.
        self._entries: deque[tuple[int, float, str, str]] = deque()
        # Event id -> seq; (occurred at, event id), the first to occur forgotten first; and
        # the latest time a forgotten event occurred.
        self._seqs_by_event: dict[str, int] = {}
        self._occurred: list[tuple[float, str]] = []
        self._forgotten_until = 0.0

    async def open(self) -> tuple[str, int]:
        return self.epoch, self.head

    async def keep(self) -> None:
        """Nothing expires while the process runs; old entries go as new ones come."""

    async def append(
        self, messages: list[Message], known: str | None = None, reached: float = 0.0
    ) -> tuple[str, list[int | None]]:
        # One process's log never starts again: `known` is always its epoch.
        now = time.time()
        seqs: list[int | None] = []
        for message in messages:
            seq = self._seqs_by_event.get(message.event_id)
            if seq is None and message.occurred_at > self._forgotten_until:
                self.head += 1
                seq = self.head
                self._entries.append((seq, now, message.audience, message.body))
                self._seqs_by_event[message.event_id] = seq
                heapq.heappush(self._occurred, (message.occurred_at, message.event_id))
                self._forget()
            seqs.append(seq)
        horizon = now - self.max_seconds
        while self._entries and (
            len(self._entries) > self.max_messages or self._entries[0][1] < horizon
        ):
            self._entries.popleft()
        return self.epoch, seqs

    def _forget(self) -> None:
        """Keep the ids of `max_messages` events, forgetting those that occurred first, and the
        latest time a forgotten one occurred."""
        if len(self._seqs_by_event) > self.max_messages:
            occurred_at, event_id = heapq.heappop(self._occurred)
            del self._seqs_by_event[event_id]
            self._forgotten_until = max(self._forgotten_until, occurred_at)

    async def read(self, epoch: str | None, after: int, until: int | None = None) -> History:
        head = self.head if until is None else min(until, self.head)
        start = max(after + 1 - self._entries[0][0], 0) if self._entries else 0
        rows = list(islice(self._entries, start, start + max(head - after, 0)))
        first = (rows[0][0], rows[0][1]) if rows else None
        horizon = time.time() - self.max_seconds
        if not _complete(self.epoch, self.head, epoch, after, first, horizon):
            return History(self.epoch, self.head, None)
        return History(self.epoch, head, [Entry(seq, to, body) for seq, _, to, body in rows])


def log_namespace(rabbitmq_url: str | None, process_id: str) -> str:
    """Whose log it is: the replicas of one event bus (a RabbitMQ virtual host, whose events
    they all receive) share one; a process on the in-process bus has its own."""
    if not rabbitmq_url:
        return f"process:{process_id}"
    return f"bus:{unquote(urlsplit(rabbitmq_url).path[1:]) or '/'}"


# KEYS: the log's epoch, seq counter, stream, event ids (a hash: event id -> seq), the times
# the events occurred (a sorted set: event id -> µs, which ids to forget first) and the latest
# time a forgotten event occurred.
# A log whose keys expired (or were lost) starts again under a new epoch, so an old seq is never
# taken for a new one.
_START = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
end
"""

# ARGV: a fresh epoch, ttl seconds. The log's {epoch, head}.
_OPEN = (
    _START
    + """
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {epoch, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
)

# ARGV: a fresh epoch, ttl seconds, max messages, the epoch the caller appended in last and
# the latest time (µs) an event it appended occurred, then (event id, occurred at in µs,
# audience, body) per message. Returns {epoch, seq...}, seq 0 for an event refused (not known,
# and it occurred no later than a forgotten one, or than what a caller appended in an epoch
# before this one: it may have been numbered already). One call per batch of events, whatever
# the number of users: each body is stored once. Entries are stamped with Redis's clock, so
# their times grow with seq.
_APPEND = (
    _START
    + """
local now = redis.call('TIME')
local at = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
local max = tonumber(ARGV[3])
local forgotten = tonumber(redis.call('GET', KEYS[6]) or '0')
if ARGV[4] ~= '' and ARGV[4] ~= epoch and tonumber(ARGV[5]) > forgotten then
  -- The log started again after the caller appended: what it had reached may be numbered.
  forgotten = tonumber(ARGV[5])
  redis.call('SET', KEYS[6], forgotten)
end
local result = {epoch}
for i = 6, #ARGV, 4 do
  local seq = redis.call('HGET', KEYS[4], ARGV[i])
  local occurred = tonumber(ARGV[i + 1])
  if seq then
    seq = tonumber(seq)
  elseif occurred <= forgotten then
    seq = 0
  else
    seq = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[3], 'MAXLEN', max, seq .. '-0',
               'a', ARGV[i + 2], 'b', ARGV[i + 3], 't', at)
    redis.call('HSET', KEYS[4], ARGV[i], seq)
    redis.call('ZADD', KEYS[5], occurred, ARGV[i])
    local excess = redis.call('ZCARD', KEYS[5]) - max
    if excess > 0 then
      -- The ids of the events that occurred first go; the latest time among them is kept.
      local gone = redis.call('ZPOPMIN', KEYS[5], excess)
      for j = 1, #gone, 2 do
        redis.call('HDEL', KEYS[4], gone[j])
        forgotten = math.max(forgotten, tonumber(gone[j + 1]))
      end
      redis.call('SET', KEYS[6], forgotten)
    end
  end
  result[#result + 1] = seq
end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return result
"""
)


class RedisLog:
    """The log in Redis: a stream with ids `<seq>-0` (capped at `max_messages`, entries stamped
    with their time), its counter (INCR), its epoch and the seqs of its events, all expiring
    together a window after the last write or `keep`."""

    def __init__(self, redis: Redis, namespace: str, max_messages: int, max_seconds: int) -> None:
        self.redis = redis
        self.max_messages = max_messages
        self.max_seconds = max_seconds
        # One hash tag: a Redis Cluster keeps the keys in one slot, as the scripts need.
        tag = f"live:{{{namespace}}}"
        self.keys = [
            f"{tag}:epoch",
            f"{tag}:seq",
            f"{tag}:log",
            f"{tag}:ids",
            f"{tag}:occurred",
            f"{tag}:forgotten",
        ]
        self._open = redis.register_script(_OPEN)
        self._append = redis.register_script(_APPEND)

    async def open(self) -> tuple[str, int]:
        epoch, head = await self._open(keys=self.keys, args=[new_epoch(), self.max_seconds])
        return epoch.decode(), int(head)

    async def keep(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.expire(key, self.max_seconds)
            await pipe.execute()

    async def append(
        self, messages: list[Message], known: str | None = None, reached: float = 0.0
    ) -> tuple[str, list[int | None]]:
        args: list[str | int] = [
            new_epoch(),
            self.max_seconds,
            self.max_messages,
            known or "",
            int(reached * 1_000_000),
        ]
        for m in messages:
            args.extend((m.event_id, int(m.occurred_at * 1_000_000), m.audience, m.body))
        epoch, *seqs = await self._append(keys=self.keys, args=args)
        return epoch.decode(), [int(seq) or None for seq in seqs]

    async def read(self, epoch: str | None, after: int, until: int | None = None) -> History:
        epoch_key, seq_key, log_key, *_ = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(epoch_key)
            pipe.get(seq_key)
            pipe.xrange(log_key, min=f"{max(after, 0) + 1}-0", max=f"{until}-0" if until else "+")
            current, head, rows = await pipe.execute()
        current_epoch = current.decode() if current else ""
        head = int(head or 0)
        # (seq, time, fields); XRANGE gives ids as bytes (`<seq>-0`).
        entries = [
            (int(entry_id.split(b"-")[0]), int(fields[b"t"]) / 1000, fields)
            for entry_id, fields in rows
        ]
        first = entries[0][:2] if entries else None
        horizon = time.time() - self.max_seconds
        if not _complete(current_epoch, head, epoch, after, first, horizon):
            return History(current_epoch, head, None)
        return History(
            current_epoch,
            head if until is None else min(until, head),
            [Entry(seq, row[b"a"].decode(), row[b"b"].decode()) for seq, _, row in entries],
        )
