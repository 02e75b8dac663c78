"""Live-updates benchmark: what one gateway process holds, and how fast it fans events out.

The distributed stack (one uvicorn process per service on the local PostgreSQL, RabbitMQ and
Redis; the live log in Redis), then two measurements against one gateway process:

1. idle sockets: N sockets opened (OPEN_AT_ONCE handshakes at a time) and held, answering
   pings; each handshake's time (connect to `hello`), and the gateway's RSS before and after,
   per socket.
2. fan-out, for each RATE:SOCKETS asked: S sockets (spread over a few users), events
   published straight to RabbitMQ at R events/s for D seconds (task.created, as the tasks
   relay would right after the commit) by a process of their own, each carrying the time it
   was published; every socket reads every message. Printed: messages received against
   expected, delay from publish to receipt p50/p99 (sockets of a sample, 1 in SAMPLE_EVERY)
   and the same delay in two stages, cut where the live log numbered the event (Redis stamps
   each entry with its own clock, to the ms), frames/s delivered, the gateway's CPU time per
   frame (the figure the client's own limits do not bend), and the CPU of the clients and of
   the rest of the stack.

The events reach the gateway only: the other services that consume task events (notifier,
analytics) run on the in-process bus here. Each handles a batch in a database transaction, and
on the same cores they took more CPU than the gateway (at 500 events/s, 3.9 and 2.0 s against
its 4.7 s over 10 s, load 8), a load a deployment puts elsewhere and no part of the gateway's
latency.

With `--before DIR` (a checkout of the code to compare with, e.g.
`git archive main | tar -x -C /tmp/live-before`), every measurement runs with the gateway of
DIR and with this one in turn, a fresh gateway process each, on the same stack.

    make bench-live                         # python -m bench.live.run --idle 1000
    python -m bench.live.run --idle 10000 --fan-out 50:1000 --fan-out 500:1000 --before DIR

The clients are raw sockets (a handshake, then frames counted and pings answered, no
per-message JSON): a Python client that parsed every message would be what gets measured, as
500 events/s to 1,000 sockets is 500,000 messages/s. The file limit is raised to its hard
limit here, which the gateway inherits (printed). Asserts nothing.

Figures, 2026-11-29, one run, `--before` = main (the gateway of decision 0074), the machine's
2 cores shared with others' tests (load average 18-31 throughout, printed on every line;
decision 0075 has the discussion):

    idle, 10,000 sockets, 200 handshakes at a time (hard file limit 20,000, both processes):
      before: handshake p50 364 ms, p99 4.9 s, 120/s; RSS 117.8 -> 571.8 MiB, 46.5 KiB/socket
      after:  handshake p50 598 ms, p99 8.4 s, 86/s;  RSS 117.9 -> 575.6 MiB, 46.9 KiB/socket
    fan-out to 1,000 sockets for 10 s: messages received within 15 s of the last publish,
    latency p50/p99 (the sample), frames/s delivered, gateway CPU per frame delivered:
      50/s   before 304,000/500,000    p50 17.3 s p99 23.3 s  10.3k/s  25.6 µs
             after  416,507/500,000    p50 12.5 s p99 21.3 s  13.8k/s  10.8 µs
      100/s  before 313,000/1,000,000  p50 19.7 s p99 28.0 s  10.0k/s  25.0 µs  (95/s sent)
             after  563,548/1,000,000  p50 16.8 s p99 25.1 s  17.5k/s   8.9 µs  (81/s sent)
      200/s  before 360,000/2,000,000  p50 28.1 s p99 33.6 s   9.9k/s  26.6 µs  (116/s sent)
             after  570,590/2,000,000  p50 18.1 s p99 24.8 s  20.0k/s   9.7 µs  (198/s sent)
      500/s  before 426,000/5,000,000  p50 20.2 s p99 28.4 s  13.5k/s  26.3 µs  (352/s sent)
             after  545,914/5,000,000  p50 18.6 s p99 31.3 s  16.1k/s  10.8 µs  (300/s sent)
    below the knee, a second run (load 17-20):
      10/s   before 100,000/100,000    p50 54 ms  p99 1.8 s    8.8k/s  32.5 µs
             after  100,000/100,000    p50 86 ms  p99 1.6 s    8.7k/s  16.2 µs
      20/s   before 200,000/200,000    p50 2.2 s  p99 4.3 s   14.5k/s  25.7 µs
             after  200,000/200,000    p50 376 ms p99 3.2 s   16.6k/s  10.4 µs

The flush window (decision 0076), 2026-11-29, `--before` = main (the gateway of 0075), load
average 25-47 (others' suites and benches on the same cores; the publisher fell short of the
rate from 100/s up), fan-out to 1,000 sockets for 10 s, same columns:
      50/s   before 465,710/500,000    p50 15.7 s p99 21.4 s  14.8k/s  10.0 µs
             after  500,000/500,000    p50 13.6 s p99 15.9 s  19.3k/s   5.4 µs
      100/s  before 460,896/1,000,000  p50 21.7 s p99 28.9 s  13.1k/s  11.1 µs  (90/s sent)
             after  690,196/1,000,000  p50 22.9 s p99 25.6 s  21.2k/s   5.5 µs
      200/s  before 586,994/2,000,000  p50 29.3 s p99 39.1 s  12.4k/s  11.1 µs  (80/s sent)
             after  1,392,382/2,000,000 p50 20.7 s p99 24.4 s 40.5k/s   4.0 µs  (141/s sent)
      500/s  before 1,028,845/5,000,000 p50 32.9 s p99 58.3 s 15.0k/s  10.5 µs  (103/s sent)
             after  862,918/5,000,000  p50 36.5 s p99 46.8 s  16.1k/s   6.1 µs  (145/s sent)

The live queue taken a batch at a time and acknowledged in bulk (decision 0077), 2026-11-29,
`--idle 0 --before DIR` (DIR = main, the gateway of 0076), 5 s of events per rate, main first
then this one, load average 12-20 (another helper's benchmarks and the lead's tests on the same
2 cores; the publisher fell short at 500/s), same columns:
    1,000 sockets (load 12-15):
      100/s  before 500,000/500,000    p50 3.6 s  p99 5.8 s   62.8k/s   2.6 µs
             after  500,000/500,000    p50 537 ms p99 2.7 s   72.1k/s   2.0 µs  (99/s sent)
      200/s  before 1,000,000/1,000,000 p50 2.2 s p99 4.3 s  112.8k/s   1.9 µs
             after  1,000,000/1,000,000 p50 1.3 s p99 4.5 s  119.5k/s   1.2 µs  (184/s sent)
      500/s  before 1,461,238/2,500,000 p50 18.4 s p99 22.3 s 42.1k/s   3.4 µs  (148/s sent)
             after  2,500,000/2,500,000 p50 6.4 s p99 11.0 s 110.7k/s   1.3 µs  (207/s sent)
    10 sockets (load 15-20), CPU per frame x 10 = per event:
      200/s  before 10,000/10,000      p50 580 ms p99 3.1 s    1.4k/s  95.0 µs
             after  10,000/10,000      p50 38 ms  p99 132 ms   1.9k/s  76.0 µs  (189/s sent)
      500/s  before 25,000/25,000      p50 1.8 s  p99 3.2 s    1.8k/s  64.8 µs  (206/s sent)
             after  25,000/25,000      p50 48 ms  p99 762 ms   1.9k/s  50.8 µs  (224/s sent)
    1 socket, 300/s for 15 s, twice, alternating (load 16-19): CPU per event 662 -> 522 µs and
    618 -> 458 µs; p50 2.7 s and 3.4 s (main fell behind) -> 58 ms and 41 ms, p99 7.4 s and
    6.4 s -> 857 ms and 277 ms.

On a quiet machine (load 1.6-2.9), 2026-11-29, `--before` = edeac38 (the gateway of 0076)
and main with 0077 in turn, fan-out to 1,000 sockets for 10 s, every message delivered in all
runs, latency p50/p99, frames/s, gateway CPU per frame:
      100/s  before  p50 33.9 ms  p99 67.9 ms   97.8k/s  3.7 µs
             after   p50 34.7 ms  p99 68.3 ms   97.3k/s  3.7 µs
      200/s  before  p50 49.4 ms  p99 112.9 ms  193k/s   2.0 µs
             after   p50 49.3 ms  p99 94.2 ms   194k/s   2.0 µs
      500/s  before  p50 2.51 s   p99 4.65 s    411k/s   1.2 µs
             after   p50 238 ms   p99 887 ms    480k/s   0.8 µs
Two more runs of the new code alone at 500/s: p50 132 and 171 ms, p99 355 and 628 ms, with the
gateway's CPU 3.7-3.8 s and the clients' 3.8 s over the 10 s (at 100/s: 3.8 s and 2.9 s). The
gateway's CPU hardly depends on the rate: with the flush window each socket gets one write
per 20 ms whenever events come (about 7.6 µs per write). At 500/s the gateway takes under
half a core, and the publisher, RabbitMQ, Redis and the 1,000 clients share the rest of the
two cores: the latency above 100/s is that machine's queueing, not the gateway's alone.

The bench's events to the gateway alone (decision 0078: notifier and analytics off the bus;
the client's cheaper parse from the third round on), 2026-11-29, `--idle 0 --fan-out
100:1000 --fan-out 500:1000 --seconds 10`, main's bench and this one in turn (the same
gateway), six rounds, others' benches on the same 2 cores (load average 4.8-18.5, each run's
own in brackets), latency p50/p99 and, at 500/s, events published per second; every message
delivered but in one run (*):
      100/s  before  642 ms/1.50 s (16.6)   136 ms/440 ms (10.2)   80.8 ms/296 ms (12.5)
                     941 ms/2.64 s (16.9)   36.7 ms/84.8 ms (11.4) 523 ms/1.16 s (13.5)
             after   27.3 ms/85.1 ms (12.9) 44.0 ms/1.79 s (11.9)  90.9 ms/665 ms (16.8)
                     177 ms/838 ms (13.5)   28.5 ms/194 ms (6.6)   113 ms/353 ms (12.0)
      500/s  before  8.69 s/16.7 s 175/s (15.7)  15.7 s/17.5 s 368/s (10.8)
                     4.34 s/8.35 s 248/s (11.8)  14.6 s/19.8 s 283/s (14.9) *
                     513 ms/952 ms 500/s (9.1)   10.7 s/16.4 s 229/s (13.6)
             after   4.83 s/6.71 s 500/s (9.6)   1.65 s/2.69 s 500/s (11.3)
                     1.12 s/2.29 s 500/s (18.5)  6.21 s/10.2 s 417/s (13.2)
                     30.7 ms/154 ms 500/s (4.8)  3.86 s/6.93 s 428/s (10.6)
(*) 4,652,500 of 5,000,000 within 15 s of the last publish. Medians of the six: at 100/s p50
329 -> 67.5 ms (0.21x), p99 799 -> 509 ms (0.64x, within the noise); at 500/s p50 9.70 ->
2.75 s (0.28x), p99 16.6 -> 4.70 s (0.28x), with the publisher reaching 500/s in four runs of
six instead of one. The split, after: at 100/s publish -> numbered p50 1.9-93 ms, numbered
-> read p50 22-58 ms (the flush window and a flush); at 500/s, whenever the gateway fell
behind, it was before the log (publish -> numbered p50 0.29-6.1 s, numbered -> read 0.13-0.74
s). In the one quieter run (load 4.8) 500 events/s to 1,000 sockets came at p50 30.7 ms, p99
154 ms. The clients' CPU at 500/s: 3.4-4.7 s before, 2.6-4.6 s after with the cheaper parse:
its 0.73-0.82x time per frame is within this machine's noise.

Then on a quiet machine (load 1.2-2.9, nothing else running), this bench once, 1,000 sockets
for 10 s, every message delivered: 100/s p50 31.2 ms, p99 141.4 ms (publish -> numbered p50
4.6 ms, numbered -> read 22.7 ms; gateway CPU 5.5 s, clients 3.2 s, the rest 2.2 s); 500/s
p50 44.7 ms, p99 117.6 ms (publish -> numbered p50 13.3 ms p99 63.0 ms, numbered -> read 29.6
ms p99 83.2 ms; gateway CPU 6.4 s, 1.3 µs per frame, clients 5.2 s, the rest 1.7 s). Against
the last quiet figures with notifier and analytics on the same cores (decision 0077: p50
132-238 ms, p99 355-887 ms at 500/s), the gateway alone is within 2.4x of the 50 ms aim at p99.
"""

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import aio_pika
import httpx
import psutil
from redis.asyncio import Redis

from bench.tasks.run import percentile
from gateway.streams import RedisLog, log_namespace
from taskhub_common.contracts import TASK_CREATED
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import RABBITMQ_URL, REDIS_HOST, new_user, recreate_database
from taskhub_common.testing.live import rabbitmq_exchange, task_data
from tests.e2e.stack import Process, Stack

DATABASE = "taskhub_bench_live"
BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_AUTH": "1000000/minute",
    "WS_HANDSHAKE_RATE": "1000000/minute",
    "WS_MAX_PER_USER": "1000000",
    "LOG_LEVEL": "WARNING",
}
# The other consumers of task events, on the in-process bus: the bench's events reach the
# gateway only (see above).
OFF_THE_BUS = {name: {"RABBITMQ_URL": ""} for name in ("notifier", "analytics")}
# A published event expires from a queue nobody reads (one those services left bound before).
EVENT_TTL_SECONDS = 60
SOCKETS_PER_USER = 250
OPEN_AT_ONCE = 200
SAMPLE_EVERY = 10
DRAIN_SECONDS = 15.0
# Where the publish time is in a task message (the bench puts it in the description).
TIME_FIELD = b'"description": "'
PONG = 0x8A


def raise_file_limit(sockets: int) -> None:
    """Sockets are files, in this process and in the gateway (which inherits the limit): as
    many as the hard limit allows, and say so when that is fewer than asked for."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < sockets + 1000:
        print(f"warning: the hard limit of open files is {hard}, fewer than {sockets} sockets")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def published_at(message: bytes, start: int = 0, end: int | None = None) -> float:
    """The time the bench published a message's event (in its task's description)."""
    at = message.index(TIME_FIELD, start, end) + len(TIME_FIELD)
    return float(message[at : message.index(b'"', at)])


class RawSocket(asyncio.Protocol):
    """A WebSocket client that costs as little as it can: the handshake, then frame headers
    read to count event messages (text frames starting with `{"seq"`), pings answered, and
    for a socket of the sample, each event's publish time read from its bytes."""

    def __init__(self, request: bytes, reads: list[tuple[float, float]] | None) -> None:
        self.request = request
        # For a socket of the sample: (published at, read at) of each event.
        self.reads = reads
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.events = 0
        self.first_event_at = 0.0
        self.last_event_at = 0.0
        self.close_code: int | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.hello.done():
            self.hello.set_exception(ConnectionError(f"closed before hello: {self.close_code}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        at = 0
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.hello.set_exception(ConnectionError(buf[: buf.find(b"\r\n")].decode()))
                return
            self.upgraded, at = True, end + 4
        now = time.time()
        size = len(buf)
        events = 0
        # Per frame as little as can be (the clients share the cores with what they measure):
        # its header, and its first bytes; counts and times kept once per read.
        while at + 2 <= size:
            length = buf[at + 1] & 0x7F
            if length < 126:
                start = at + 2
            elif length == 126:
                if at + 4 > size:
                    break
                length, start = buf[at + 2] << 8 | buf[at + 3], at + 4
            else:
                if at + 10 > size:
                    break
                length, start = int.from_bytes(buf[at + 2 : at + 10]), at + 10
            end = start + length
            if end > size:
                break
            opcode = buf[at] & 0x0F
            if opcode == 0x1:
                if buf.startswith(b'{"seq"', start):
                    events += 1
                    if self.reads is not None:
                        self.reads.append((published_at(buf, start, end), now))
                elif not self.hello.done():
                    self.hello.set_result(None)
            elif opcode == 0x9:  # ping: a pong, masked with a zero key, as a client must
                assert self.transport is not None
                self.transport.write(bytes((PONG, 0x80 | length)) + b"\0\0\0\0" + buf[start:end])
            elif opcode == 0x8:
                self.close_code = int.from_bytes(buf[start : start + 2]) if length >= 2 else None
            at = end
        self.buffer = buf[at:]
        if events:
            self.events += events
            self.first_event_at = self.first_event_at or now
            self.last_event_at = now

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Clients:
    sockets: list[RawSocket] = field(default_factory=list)
    handshakes: list[float] = field(default_factory=list)
    reads: list[tuple[float, float]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(socket.events for socket in self.sockets)

    def close(self) -> None:
        for socket in self.sockets:
            socket.close()


def upgrade_request(host: str, port: int, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: bearer, {token}\r\n\r\n"
    ).encode()


async def tokens(base_url: str, sockets: int) -> list[str]:
    """One access token per socket, a new user per SOCKETS_PER_USER sockets."""
    users = max(1, -(-sockets // SOCKETS_PER_USER))
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        made = []
        for _ in range(users):
            response = await client.post("/api/auth/register", json=new_user())
            response.raise_for_status()
            made.append(response.json()["access_token"])
    return [made[i % users] for i in range(sockets)]


async def open_clients(base_url: str, count: int) -> Clients:
    host, port = base_url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    clients = Clients()

    async def open_one(index: int, token: str) -> None:
        sample = clients.reads if index % SAMPLE_EVERY == 0 else None
        started = time.perf_counter()
        _, socket = await loop.create_connection(
            lambda: RawSocket(upgrade_request(host, int(port), token), sample), host, int(port)
        )
        await socket.hello
        clients.handshakes.append(time.perf_counter() - started)
        clients.sockets.append(socket)

    all_tokens = await tokens(base_url, count)
    for start in range(0, count, OPEN_AT_ONCE):
        batch = all_tokens[start : start + OPEN_AT_ONCE]
        await asyncio.gather(*(open_one(start + i, t) for i, t in enumerate(batch)))
    return clients


def publish(rate: int, seconds: float) -> tuple[int, float]:
    """In a process of its own (its pace not bent by the clients): events at `rate` for
    `seconds`, each at its slot; how many, and how long it took."""
    return asyncio.run(_publish(rate, seconds))


async def _publish(rate: int, seconds: float) -> tuple[int, float]:
    count = int(rate * seconds)
    async with rabbitmq_exchange() as exchange:
        started = time.monotonic()
        for sent in range(count):
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # The time of publishing travels in the task, fixed width.
            data = task_data(title="bench", description=f"{time.time():.6f}")
            event = EventEnvelope(type=TASK_CREATED, producer="bench", data=data)
            message = aio_pika.Message(
                event.model_dump_json().encode(), expiration=EVENT_TTL_SECONDS
            )
            await exchange.publish(message, routing_key=event.type)
        return count, time.monotonic() - started


@dataclass
class Gateway:
    """One gateway process of the stack's, with the code of `source` (None: this tree)."""

    name: str
    source: Path | None
    process: Process | None = None

    def start(self, stack: Stack, template: Process) -> int:
        env = dict(template.env)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source / "services" / "gateway")
        log = stack.workdir / f"gateway-{self.name}.log"
        self.process = Process(f"gateway-{self.name}", template.command, env, log)
        self.process.start()
        stack.processes.append(self.process)
        stack.wait_healthy(120)
        assert self.process.popen is not None
        return self.process.popen.pid

    def stop(self, stack: Stack) -> None:
        assert self.process is not None
        self.process.stop()
        stack.processes.remove(self.process)


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def idle(stack: Stack, name: str, pid: int, count: int) -> None:
    before = rss(pid)
    started = time.perf_counter()
    clients = await open_clients(stack.base_url, count)
    took = time.perf_counter() - started
    await asyncio.sleep(2)
    after = rss(pid)
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"{stack.base_url}/api/health")).json()["live"]
    clients.close()
    hs = clients.handshakes
    print(
        f"idle [{name}]: {len(clients.sockets)} sockets held (health: {health['sockets']}); "
        f"handshake p50 {percentile(hs, 0.5) * 1000:.1f} ms, p99 {percentile(hs, 0.99) * 1000:.1f}"
        f" ms, {count / took:.0f}/s ({OPEN_AT_ONCE} at a time); gateway RSS "
        f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB, "
        f"{(after - before) / count / 1024:.1f} KiB per socket; {load()}",
        flush=True,
    )


def p50_p99(seconds: list[float]) -> str:
    p50, p99 = percentile(seconds, 0.5) * 1000, percentile(seconds, 0.99) * 1000
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


async def stages(reads: list[tuple[float, float]]) -> str:
    """The latency in two: from publishing to the append that numbered the event in the live
    log (Redis's clock, which stamps each entry, to the ms; the same host's), and from there to
    the client's read (the reply reaching the gateway, the flush window, the writes, the read)."""
    redis = Redis(host=REDIS_HOST)
    try:
        log = RedisLog(redis, log_namespace(RABBITMQ_URL, ""), 0, 0).keys[2]
        rows = await redis.xrange(log)
    finally:
        await redis.aclose()
    numbered = {}
    for _, fields in rows:
        with contextlib.suppress(ValueError):  # not one of the bench's events
            numbered[published_at(fields[b"b"])] = int(fields[b"t"]) / 1000
    pairs = [(numbered[p] - p, read - numbered[p]) for p, read in reads if p in numbered]
    if not pairs:
        return "stages unknown (the log no longer holds these events)"
    to_log, to_read = zip(*pairs, strict=True)
    return f"publish -> numbered {p50_p99(list(to_log))}, numbered -> read {p50_p99(list(to_read))}"


async def fan_out(stack: Stack, name: str, pid: int, count: int, rate: int, seconds: float) -> None:
    clients = await open_clients(stack.base_url, count)
    await asyncio.sleep(1)
    cpu_before, clients_cpu_before = cpu(pid), cpu(os.getpid())
    rest = [p.popen.pid for p in stack.processes if p.popen and p.popen.pid != pid]
    rest_cpu_before = sum(map(cpu, rest))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        sent, took = await asyncio.get_running_loop().run_in_executor(pool, publish, rate, seconds)
    expected = sent * count
    deadline = time.monotonic() + DRAIN_SECONDS
    while clients.events < expected and time.monotonic() < deadline:
        if all(socket.lost for socket in clients.sockets):
            break
        await asyncio.sleep(0.1)
    gateway_cpu = cpu(pid) - cpu_before
    # The clients share the two cores: when theirs nears the run's length, they set the pace.
    clients_cpu = cpu(os.getpid()) - clients_cpu_before
    rest_cpu = sum(map(cpu, rest)) - rest_cpu_before
    received = clients.events
    reached = [socket for socket in clients.sockets if socket.events]
    first = min((socket.first_event_at for socket in reached), default=0.0)
    last = max((socket.last_event_at for socket in reached), default=0.0)
    closed = sum(socket.lost for socket in clients.sockets)
    clients.close()
    lat = [read - published for published, read in clients.reads]
    figures = f"{p50_p99(lat)}; {await stages(clients.reads)}" if lat else "nothing delivered"
    print(
        f"fan-out [{name}]: {rate} events/s ({sent / took:.0f} published) for {seconds:g} s to "
        f"{count} sockets: {received}/{expected} messages, {closed} sockets closed; latency "
        f"{figures}; {received / max(last - first, 1e-9):.0f} frames/s; gateway CPU "
        f"{gateway_cpu:.1f} s, {gateway_cpu / max(received, 1) * 1e6:.1f} µs per frame; "
        f"clients CPU {clients_cpu:.1f} s, the rest of the stack's {rest_cpu:.1f} s; {load()}",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1000, help="idle sockets (10,000 documented)")
    parser.add_argument(
        "--fan-out",
        action="append",
        metavar="RATE:SOCKETS",
        help="events per second and sockets of a fan-out run (repeatable; default 100:100)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each fan-out")
    parser.add_argument("--before", type=Path, help="a checkout whose gateway to compare with")
    args = parser.parse_args()
    runs = [tuple(map(int, run.split(":"))) for run in args.fan_out or ["100:100"]]
    raise_file_limit(max(args.idle, *(sockets for _, sockets in runs)))
    gateways = [Gateway("after", None)]
    if args.before:
        gateways.insert(0, Gateway("before", args.before.resolve()))
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-live-"))
    # Ten minutes to start: the machine this runs on is often busy with other work.
    stack = Stack(
        "distributed",
        workdir,
        database=DATABASE,
        extra_env=BENCH_ENV,
        service_env=OFF_THE_BUS,
        start_timeout=600,
    )
    stack.start()
    try:
        template = next(process for process in stack.processes if process.name == "gateway")
        # Each measurement starts a gateway of its own, on the same port.
        template.stop()
        stack.processes.remove(template)
        measurements = ([("idle", args.idle, 0)] if args.idle else []) + [
            ("fan-out", sockets, rate) for rate, sockets in runs
        ]
        for kind, sockets, rate in measurements:
            for gateway in gateways:
                pid = gateway.start(stack, template)
                limit = psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0]
                if limit < sockets + 100:
                    print(f"warning: the gateway may open {limit} files only")
                try:
                    if kind == "idle":
                        await idle(stack, gateway.name, pid, sockets)
                    else:
                        await fan_out(stack, gateway.name, pid, sockets, rate, args.seconds)
                finally:
                    gateway.stop(stack)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
