"""Gateway benchmark: what the gateway hop costs, endpoint by endpoint, in both modes.

For each mode (distributed: one uvicorn process per service on the local PostgreSQL, RabbitMQ
and Redis; embedded: one process, as `make run`), one user with 2,000 tasks, caches warm, and
for each of five endpoints the same request through the gateway and straight to the service
that owns it, measured in turn (a few short rounds, alternating) so that a noisy machine
slows both alike and their ratio holds. A bare ASGI + asyncpg endpoint serving the same page
of 20 is the ceiling. The composed view is measured warm like the pages: its task from tasks'
cache, its comments and files from the gateway's part caches (decision 0044).

    make bench-gateway          # or: python -m bench.gateway.run --seconds 2 --rounds 6
A round of every request, not counted, warms the stack first; then in each round the two sides
of an endpoint go one after the other, each first in turn, and after a side's POSTs the bench
waits for the stack to go quiet (their events worked through) before the next side, counting
that work in the POSTs' CPU. Prints req/s (median of the rounds),
p50 and p99 (all rounds), the stack's CPU time per request (median of the rounds; every service
process, not PostgreSQL or Redis), the whole machine's CPU time per request less the bench's own
("all": PostgreSQL, RabbitMQ and Redis too), and gateway/direct req/s and direct/gateway CPU
per request, both ways: the CPU ratios are not bent by the client sharing the cores. Asserts
nothing. Aims: the gateway under 15% of the direct call on every endpoint (direct/gateway
>= 0.87x); the composed task view within 1.5x of a plain task read; the cached list page
~1,000 req/s through the gateway.

Figures, 2026-11-29, a quiet machine (load 2-3), gateway/direct req/s: distributed list 0.58x
(548 req/s), filtered 0.74x, composed 0.62x, /me 0.73x, POST 0.73x; embedded 0.59x (554),
0.66x, 0.64x, 0.83x, 0.74x; composed / plain task read p50 1.83x and 1.75x; the ceiling
1,109-1,167 req/s (its client shares the two cores).

After decisions 0046-0048 (the pass-through as a bare route, rate-limit hits in blocks, one
lookup for the composed view's parts), 2026-11-29, the machine at load 26-39 (four sessions),
main and the branch in turn: distributed list 0.62x -> 0.63x, filtered 0.44x -> 0.49x, composed
0.85x -> 0.73x, /me 0.39x -> 0.43x, POST 0.59x -> 0.74x; composed / plain p50 2.66x -> 1.85x.
At tens of req/s these ratios are mostly the scheduler's; the embedded run at that load gave
0.13x-2.17x either way and says nothing. The gateway's own CPU per pass-through request (its
app called in-process over a stand-in upstream, Redis counting the limit), in turn in one
sitting: main 810-925 us (load 20), 1,090-2,184 us (load 16-24); the branch 142-154 us and
221-251 us. Then on a quiet machine (load 1-3, both stacks on one PostgreSQL cluster), the code
before and after, one run each, one after the other: distributed list 0.58x -> 0.87x, filtered
0.69x -> 1.24x, composed 0.67x -> 1.23x, /me 0.57x -> 0.67x, POST 1.25x -> 1.07x (at 48-68
req/s, noise); embedded 0.64x -> 0.81x, 0.69x -> 0.79x, 0.59x -> 0.71x, 1.05x -> 0.63x (noise),
0.75x -> 0.77x; composed / plain p50 1.74x -> 1.22x and 1.82x -> 1.28x. That machine was slower
than the first one (direct list 421-475 req/s, p99 400 ms and more), so only ratios compare.

After decision 0049 (start-up's objects frozen out of the collector's reach, `/me` from a
profile cache per user), 2026-11-29, load 13-17 (two other sessions' benchmarks), main and the
branch in turn, `--seconds 3 --rounds 3`, req/s via gateway and direct: embedded `/me` 255 ->
852 and 362 -> 1,100, list 296 -> 377 and 536 -> 616, p99 of the reads 367-539 ms -> 59-131 ms;
distributed `/me` 258 -> 750 and 313 -> 1,040, list 452 -> 512 and 387 -> 658, filtered
direct 440 -> 795, composed via gateway 317 -> 460. The ratios at that load moved either way
(embedded list 0.55x -> 0.61x, composed 0.56x -> 0.42x; distributed `/me` 0.82x -> 0.72x) and
say nothing. In the embedded mode the aim is out of reach of trimming: the gateway's own stack
costs about 250-350 us per request there, beside 500-800 us for a cached read of the service
(the embedded process's CPU per request, apps called in-process; decision 0049).

After decisions 0049 (start-up's heap frozen, /me cached per user), 0077 and 0086, 2026-11-29,
a quiet machine (load 1.5-2.2) much faster than the one above (the ceiling 1,260-1,358 req/s),
edeac38 (before) and 0b967ae (after) one run each, one after the other, gateway/direct req/s:
distributed list 0.94x -> 0.94x (1,110 -> 1,247 req/s through the gateway), filtered 1.00x ->
0.94x, composed 1.02x -> 0.86x, /me 0.88x -> 0.96x (456 -> 1,559 req/s), POST 0.96x -> 0.87x;
embedded list 0.83x -> 0.68x (951 -> 1,122 req/s; direct 1,146 -> 1,650), filtered 0.82x ->
0.72x, composed 0.76x -> 0.67x, /me 0.76x -> 0.66x (433 -> 1,519 req/s), POST 0.98x -> 1.07x;
composed / plain p50 1.08x -> 1.14x and 1.53x -> 1.59x; p99 of the reads 72-192 ms -> 17-24 ms.
Every read serves more requests per second, in both modes; the embedded ratios fell because
the direct calls gained more than the gateway's own share of about 250-350 µs per request.

After decision 0092 (the embedded mode's pass-through and composed view past the gateway's
middleware stack), 2026-11-29, a quiet machine (load 1.4-2.1), e5c20af (before) and 02fc941
(after) in turn, two runs each, gateway/direct req/s, embedded: list 0.77x, 0.82x -> 0.79x,
0.80x; filtered 0.92x, 0.84x -> 0.82x, 0.80x; composed 0.68x, 0.68x -> 0.70x, 0.76x; /me
0.67x, 0.67x -> 0.76x, 0.76x; POST 0.90x, 0.96x -> 0.87x, 0.95x; composed / plain task read
p50 1.55x, 1.55x -> 1.39x, 1.36x; the ceiling 1,216-1,247 req/s, the direct list 1,129-1,247
req/s (the direct list is at the ceiling, which is what the bench's own client can send on the
two cores). The embedded process's CPU per request (its CPU time over the requests of five
alternating 2 s rounds), before -> after, gateway/direct: list 0.82 -> 0.78, filtered 0.81 ->
0.80, composed 0.68 -> 0.74, /me 0.70 -> 0.79.

After decision 0095 (request metrics looked up once, rate limits in memory without a task per
hit), 2026-11-29, load 3.2-5.9 (another session's benchmarks), f5ac0f3 (before) and after in
turn, two pairs, embedded, gateway/direct req/s and direct/gateway CPU per request: list 0.77x,
0.76x (CPU 0.80x, 0.81x) -> 0.82x, 0.83x (0.82x, 0.86x); filtered 0.84x, 0.93x (0.84x, 0.86x) ->
0.83x, 0.80x (0.85x, 0.92x); composed 0.81x, 0.74x (0.75x, 0.76x) -> 0.60x, 0.84x (0.69x,
0.81x); /me 0.79x, 0.82x (0.79x, 0.79x) -> 0.90x, 0.87x (0.84x, 0.83x); POST about 1x in all.
Composed / plain task read p50 1.34x, 1.35x -> 1.52x, 1.24x.

After decision 0096 (the owner of a path remembered), 2026-11-30, a machine about twice as slow
(the ceiling 550-750 req/s), load 1.5-3.7, 7f9bb7f (before) and after in turn, three pairs
embedded, one distributed, gateway/direct req/s (direct/gateway CPU): embedded list 0.96x,
0.93x, 0.80x (0.97x, 0.85x, 0.80x) -> 0.88x, 0.66x, 0.97x (0.87x, 0.89x, 0.96x); filtered 0.80x,
0.82x, 0.81x (0.82x, 0.88x, 0.81x) -> 0.92x, 0.80x, 0.97x (0.92x, 0.81x, 0.95x); /me 0.87x,
0.77x, 0.87x (0.87x, 0.73x, 0.86x) -> 0.73x, 0.69x, 0.87x (0.73x, 0.82x, 0.87x); POST 0.89x-0.91x
-> 0.91x-1.01x; composed / plain p50 1.55x, 1.37x, 1.37x -> 1.44x, 1.48x, 1.62x. Distributed
list 0.96x -> 0.97x, filtered 0.98x -> 0.91x, /me 0.98x -> 0.87x, POST 1.22x -> 0.93x, composed /
plain 1.20x -> 1.23x. The changes sit inside the spread; raw ASGI puts them at about a fifth of
the gateway's extra CPU (decision 0096).

After decision 0098 (a short way through CORS, the rate-limit key and the wire path
remembered), 2026-11-30, a machine at its usual speed, load 0.8-3.5, ecc310e (before) and after
in turn, two pairs a mode, direct/gateway CPU per request: embedded list 0.85, 0.84 -> 0.92,
0.86; filtered 0.85, 0.86 -> 0.90, 0.86; /me 0.83, 0.82 -> 0.84, 0.88; POST 0.96, 0.87 -> 0.99,
0.95; composed / plain p50 1.36, 1.30 -> 1.30, 1.28. Distributed gateway/direct req/s: list
0.93, 0.94 -> 0.95, 1.01; filtered 1.04, 0.97 -> 1.00, 0.97; /me 0.95, 0.95 -> 0.94, 0.96; POST
0.86, 0.89 -> 0.82, 0.81; composed / plain p50 1.15-1.16 throughout. The cached list page
through the gateway 2,330-2,491 req/s embedded, 2,069-2,231 distributed; the ceiling, which
has PostgreSQL build the page on every request (a cached page skips that), 1,675-1,864.

After decision 0099 (the token read from the raw headers, the scheme and a user's rate-limit
key without lookups; and this bench's warm-up round, sides first in turn, a wait for quiet after
POSTs, and the "all" column), 2026-11-30, load about 1-3, f4f993d's gateway (before) and after
in turn, the new method for both, two pairs a mode. Embedded, direct/gateway CPU per request:
list 0.93, 0.89 -> 0.90, 0.91; filtered 0.90, 0.92 -> 0.87, 0.90; /me 0.83, 0.84 -> 0.90,
0.89; POST 1.06, 1.01 -> 1.04, 0.99; composed / plain p50 1.23, 1.34 -> 1.27, 1.25.
Distributed, gateway/direct req/s: list 0.96, 1.08 -> 0.96, 0.97; filtered 0.94, 0.97 -> 0.98,
1.03; /me 0.92, 1.00 -> 0.97, 0.98; POST 0.92, 1.02 -> 0.84, 0.89 (whole-machine CPU 0.90,
1.00 -> 0.87, 0.83: unsettled, decision 0099); composed / plain p50 1.17, 1.17 -> 1.14, 1.24.
The cached list page through the gateway 2,168-2,824 req/s. With quiet judged a quarter second
at a time and six rounds, distributed POST: before 0.87x (CPU 0.92x), after 0.91x, 0.90x (0.89x,
0.93x). The final `make bench-gateway`, six rounds: distributed list 0.99x, filtered 0.96x, /me
0.96x, POST 0.92x (CPU 0.94x), composed / plain p50 1.18x; embedded (CPU) list 0.92x, filtered
0.90x, /me 0.89x, POST 0.99x, composed / plain p50 1.28x; the cached list page through the
gateway 2,265 and 2,401 req/s.

The gateway's own part alone, as raw ASGI calls in the embedded process (no HTTP, no
client): `python -m bench.gateway.in_process`.

The load comes from a minimal HTTP/1.1 client on asyncio streams (keep-alive connections,
requests built once): httpx costs more CPU per request than the servers under test, and on a
small machine the client's cost would be what gets measured.
"""

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from bench.stacks import cpu_seconds, service_processes, wait_for_quiet
from bench.tasks.run import percentile, task_batch
from taskhub_common.testing import new_user, recreate_database
from tests.e2e.stack import Process, Stack, free_port

TASKS = 2_000
# Seven processes importing at once on a busy two-core machine can take minutes.
START_TIMEOUT = 600
# At most this long for the stack to go quiet after a round of writes.
SETTLE = 60.0
BENCH_ENV = {"RATE_LIMIT_DEFAULT": "1000000/minute", "LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class Target:
    """One request, ready to send: where, and its bytes."""

    base_url: str
    method: str
    path: str
    token: str
    body: dict | None = None

    def wire(self) -> bytes:
        content = json.dumps(self.body).encode() if self.body is not None else b""
        netloc = urlsplit(self.base_url).netloc
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\nHost: {netloc}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Length: {len(content)}\r\n"
            + ("Content-Type: application/json\r\n" if content else "")
            + "\r\n"
        )
        return head.encode() + content


class Connection:
    """One keep-alive HTTP/1.1 connection; reads Content-Length and chunked bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> "Connection":
        address = urlsplit(base_url)
        return cls(*await asyncio.open_connection(address.hostname, address.port))

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in header_lines if line)
        )
        if "content-length" in headers:
            await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        return int(status_line.split(" ", 2)[1])

    def close(self) -> None:
        self.writer.close()


@dataclass
class Figures:
    throughputs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # The stack's CPU time per request of each round: unlike req/s, not bent by the bench's
    # client sharing the cores, nor by others' work on them.
    cpu_per_request: list[float] = field(default_factory=list)
    # The whole machine's CPU time per request less the bench's own (its client): PostgreSQL,
    # RabbitMQ and Redis too, which a request costs as much as the services' work.
    machine_cpu_per_request: list[float] = field(default_factory=list)
    # Answers of 400 and above, and connections the server closed: counted and shown, not
    # fatal (a swamped machine times out).
    errors: int = 0

    @property
    def rate(self) -> float:
        return statistics.median(self.throughputs)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_per_request)

    @property
    def machine_cpu(self) -> float:
        return statistics.median(self.machine_cpu_per_request)

    def row(self, name: str) -> str:
        return (
            f"{name:<48}{self.rate:>8.0f}{statistics.median(self.latencies) * 1000:>8.1f}"
            f"{percentile(self.latencies, 0.99) * 1000:>8.1f}{self.cpu * 1e6:>8.0f}"
            f"{self.machine_cpu * 1e6:>8.0f}" + (f"  ({self.errors} errors)" if self.errors else "")
        )


async def load(
    target: Target,
    seconds: float,
    concurrency: int,
    figures: Figures,
    stack: list[psutil.Process],
    settle: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """`concurrency` connections sending the request back to back for `seconds`, and the CPU
    time the `stack` spent meanwhile, and until `settle` returns."""
    request = target.wire()
    connections = [await Connection.open(target.base_url) for _ in range(concurrency)]
    latencies: list[float] = []

    async def client(index: int) -> None:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                status = await connections[index].send(request)
            except (asyncio.IncompleteReadError, ConnectionError):
                # Closed by the server (a keep-alive timeout on a swamped machine): an error,
                # and a new connection.
                figures.errors += 1
                connections[index].close()
                connections[index] = await Connection.open(target.base_url)
                continue
            latencies.append(time.perf_counter() - began)
            if status >= 400:
                figures.errors += 1

    try:
        # One request each first, all at once: warm caches and pools. (One after another, the
        # first connections could idle past the server's 5 s keep-alive on a slow machine.)
        await asyncio.gather(*(connection.send(request) for connection in connections))
        deadline = time.perf_counter() + seconds
        began, cpu_before = time.perf_counter(), sum(map(cpu_seconds, stack))
        machine_before = machine_cpu_seconds()
        await asyncio.gather(*(client(index) for index in range(concurrency)))
        figures.throughputs.append(len(latencies) / (time.perf_counter() - began))
        if settle is not None:
            await settle()
        cpu_spent = sum(map(cpu_seconds, stack)) - cpu_before
        figures.cpu_per_request.append(cpu_spent / len(latencies))
        machine_spent = machine_cpu_seconds() - machine_before
        figures.machine_cpu_per_request.append(machine_spent / len(latencies))
        figures.latencies.extend(latencies)
    finally:
        for connection in connections:
            connection.close()


def machine_cpu_seconds() -> float:
    """CPU time every process of the machine has used, less this one's (the bench's client)."""
    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + times.irq + times.softirq
    return busy - cpu_seconds(psutil.Process())


async def seed(api: httpx.AsyncClient) -> tuple[str, str, str]:
    """One user with TASKS tasks and a comment on one, made through `api` (the gateway):
    (token, user id, that task's id)."""
    account = (await api.post("/api/auth/register", json=new_user())).json()
    headers = {"Authorization": f"Bearer {account['access_token']}"}
    for start in range(0, TASKS, 1000):
        response = await api.post(
            "/api/tasks/bulk", headers=headers, json={"tasks": task_batch(start, 1000)}
        )
        response.raise_for_status()
    me = (await api.get("/api/auth/me", headers=headers)).json()
    task = (await api.get("/api/tasks", headers=headers, params={"page_size": 1})).json()
    task_id = task["tasks"][0]["id"]
    comment = {"content": "a *comment*"}
    response = await api.post(f"/api/tasks/{task_id}/comments", headers=headers, json=comment)
    response.raise_for_status()
    return account["access_token"], me["id"], task_id


def endpoints(
    gateway: str, tasks: str, identity: str, token: str, task_id: str
) -> dict[str, tuple[Target, Target]]:
    """Each endpoint as (through the gateway, straight to its owner). POST last: it bumps the
    tasks' cache generation, and the pages after it start cold again."""
    searched = (
        "/api/tasks?status=todo&priority=high&search=report&sort_by=due_date&page=1&page_size=20"
    )
    paths = {
        "GET /api/tasks page 1": (tasks, "GET", "/api/tasks?page=1&page_size=20", None),
        "GET /api/tasks filtered+searched": (tasks, "GET", searched, None),
        "GET /api/tasks/{id} (composed)": (tasks, "GET", f"/api/tasks/{task_id}", None),
        "GET /api/auth/me": (identity, "GET", "/api/auth/me", None),
        "POST /api/tasks": (tasks, "POST", "/api/tasks", {"title": "bench", "tags": ["bench"]}),
    }
    return {
        name: (
            Target(gateway, method, path, token, body),
            Target(owner, method, path, token, body),
        )
        for name, (owner, method, path, body) in paths.items()
    }


async def measure_mode(
    mode: str, stack: Stack, urls: dict[str, str], args: argparse.Namespace
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as api:
        token, user_id, task_id = await seed(api)
    ceiling_port = free_port()
    ceiling = Process(
        "ceiling",
        [
            *[sys.executable, "-m", "uvicorn", "bench.gateway.ceiling:app", "--no-access-log"],
            *["--port", str(ceiling_port), "--log-level", "warning"],
        ],
        {"CEILING_DB": json.dumps(stack.database_address())},
        stack.workdir / "ceiling.log",
    )
    ceiling.start()
    try:
        ceiling_url = f"http://127.0.0.1:{ceiling_port}"
        await wait_serving(ceiling_url)
        table = endpoints(stack.base_url, urls["tasks"], urls["identity"], token, task_id)
        ceiling_target = Target(ceiling_url, "GET", f"/page?user={user_id}", token)
        results = {name: (Figures(), Figures()) for name in table}
        ceiling_figures = Figures()
        processes = service_processes(stack)
        ceiling_process = [psutil.Process(ceiling.popen.pid)]

        async def measure(target: Target, figures: Figures, seconds: float) -> None:
            # A write's events are worked through after its answer (the relay, the consumers,
            # the live intake): that work is counted in its CPU, and does not spill into the
            # next side's time. Quiet is judged a quarter second at a time: the machine's idle
            # work in the wait is counted too, and should be little.
            settle = (
                None if target.method == "GET" else partial(wait_for_quiet, stack, SETTLE, 0.25)
            )
            await load(target, seconds, args.concurrency, figures, processes, settle)

        # A round of every request first, not counted: pools grow, statements are prepared,
        # the consumers take their first events. Without it the first side measured (and the
        # first round's POSTs) paid for the stack's start.
        for through, direct in table.values():
            for target in (through, direct):
                await measure(target, Figures(), args.seconds / 2)
        for round_ in range(args.rounds):
            for name, (through, direct) in table.items():
                # Each side first in turn: whatever going first or second does to a side (the
                # previous endpoint's connections closing, the machine's own timers) falls on
                # both alike.
                sides = [(through, results[name][0]), (direct, results[name][1])]
                for target, figures in sides if round_ % 2 == 0 else sides[::-1]:
                    await measure(target, figures, args.seconds)
            await load(
                ceiling_target, args.seconds, args.concurrency, ceiling_figures, ceiling_process
            )
    finally:
        ceiling.stop()
    print(f"\n{mode} ({args.concurrency} connections, {args.rounds} rounds of {args.seconds} s)")
    print(
        f"{'':<48}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'all us':>8}"
        "   gateway/direct: req/s; direct/gateway: CPU, all CPU"
    )
    for name, (through, direct) in results.items():
        print(through.row(f"{name} via gateway"))
        ratios = (
            f"{through.rate / direct.rate:>6.2f}x {direct.cpu / through.cpu:>6.2f}x"
            f" {direct.machine_cpu / through.machine_cpu:>6.2f}x"
        )
        print(f"{direct.row(f'{name} direct')}   {ratios}")
    composed, plain = results["GET /api/tasks/{id} (composed)"]
    print(
        f"composed view / plain task read p50: "
        f"{statistics.median(composed.latencies) / statistics.median(plain.latencies):.2f}x"
    )
    print(ceiling_figures.row("ceiling: bare ASGI + asyncpg page"))


async def wait_serving(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(30):
        while True:
            try:
                await client.get("/")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)


async def distributed(args: argparse.Namespace) -> None:
    await recreate_database("taskhub_bench_gateway")
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-"))
    stack = Stack("distributed", workdir, database="taskhub_bench_gateway", extra_env=BENCH_ENV)
    stack.start_timeout = START_TIMEOUT
    stack.start()
    try:
        gateway_env = stack.processes[-1].env
        urls = {"tasks": gateway_env["TASKS_URL"], "identity": gateway_env["IDENTITY_URL"]}
        await measure_mode("distributed", stack, urls, args)
    finally:
        stack.stop()


async def embedded(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-"))
    ports = {"gateway": free_port(), "tasks": free_port(), "identity": free_port()}
    stack = Stack("embedded", workdir)
    stack.processes = [
        Process(
            "embedded",
            [sys.executable, "-m", "bench.gateway.embedded_server"],
            {
                **BENCH_ENV,
                "DATA_DIR": str(workdir / "var"),
                "PORT": str(ports["gateway"]),
                "TASKS_DIRECT_PORT": str(ports["tasks"]),
                "IDENTITY_DIRECT_PORT": str(ports["identity"]),
            },
            workdir / "embedded.log",
        )
    ]
    stack.processes[0].start()
    stack.base_url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        stack.wait_healthy(timeout=START_TIMEOUT)
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in ("tasks", "identity")}
        await measure_mode("embedded", stack, urls, args)
    finally:
        stack.stop()


async def main(args: argparse.Namespace) -> None:
    if args.mode in ("distributed", "both"):
        await distributed(args)
    if args.mode in ("embedded", "both"):
        await embedded(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["distributed", "embedded", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=2.0)
    # Six: with three, one round's luck moved a ratio by 0.05-0.1 (decision 0099).
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
