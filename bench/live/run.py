"""Live-updates benchmark: what one gateway process holds, and how fast it fans events out.

The distributed stack (one uvicorn process per service on the local PostgreSQL, RabbitMQ and
Redis; the live log in Redis), then two measurements against its gateway:

1. idle sockets: N sockets opened and held (answering pings); the gateway's RSS before and
   after, per socket.
2. fan-out, for each RATE:SOCKETS asked: S sockets (spread over a few users), events
   published straight to RabbitMQ at R events/s for D seconds (task.created, as the tasks
   relay would right after the commit), each carrying the time it was published; every socket
   reads every message, and the delay from publish to receipt is measured. Printed: p50, p99,
   and messages received against expected.

    make bench-live                         # or: python -m bench.live.run --idle 1000
    python -m bench.live.run --idle 10000 --fan-out 500:1000 --seconds 10
    python -m bench.live.run --idle 0 --fan-out 50:100 --fan-out 500:20

The file limit is raised to its hard limit in this process, which the gateway inherits.

The issue's figures are 10,000 idle sockets and 500 events/s to 1,000 sockets; the defaults
are smaller, for a shared 2-core machine (the client, in Python too, reads every message of
the fan-out: at 500 events/s to 1,000 sockets that is 500,000 messages/s to parse, more than
the client can, so there the client is what gets measured). Asserts nothing.
"""

import argparse
import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedError

from bench.tasks.run import percentile
from taskhub_common.contracts import TASK_CREATED
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import new_user, recreate_database
from taskhub_common.testing.live import open_socket, publish_on, rabbitmq_exchange, task_data
from tests.e2e.stack import Stack

DATABASE = "taskhub_bench_live"
BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_AUTH": "1000000/minute",
    "WS_HANDSHAKE_RATE": "1000000/minute",
    "WS_MAX_PER_USER": "1000000",
    "LOG_LEVEL": "WARNING",
}
SOCKETS_PER_USER = 250
# The stack trusts no proxy, so the gateway takes the peer's address whatever this says.
CLIENT_IP = "127.0.0.1"
OPEN_AT_ONCE = 250
UNAVAILABLE = 1011


def raise_file_limit(sockets: int) -> None:
    """Sockets are files, in this process and in the gateway (which inherits the limit): as
    many as the hard limit allows, and say so when that is fewer than asked for."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < sockets + 1000:
        print(f"warning: the hard limit of open files is {hard}, fewer than {sockets} sockets")


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


async def open_sockets(ws_base: str, tokens_: list[str]) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    for start in range(0, len(tokens_), OPEN_AT_ONCE):
        batch = tokens_[start : start + OPEN_AT_ONCE]
        sockets.extend(await asyncio.gather(*(open_said_hello(ws_base, t) for t in batch)))
    return sockets


async def open_said_hello(ws_base: str, token: str) -> ClientConnection:
    """A socket past its `hello`. One closed with 1011 ("try again later": the gateway could
    not reach Redis in time, a burst of handshakes on a busy machine) is opened again, as a
    client should."""
    while True:
        ws = await open_socket(ws_base, token, CLIENT_IP, open_timeout=120)
        try:
            await ws.recv()  # hello
        except ConnectionClosedError:
            if ws.close_code != UNAVAILABLE:
                raise
            await asyncio.sleep(1)
            continue
        return ws


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def idle(stack: Stack, gateway_pid: int, count: int) -> None:
    ws_base = stack.base_url.replace("http://", "ws://")
    before = rss(gateway_pid)
    sockets = await open_sockets(ws_base, await tokens(stack.base_url, count))
    await asyncio.sleep(2)
    after = rss(gateway_pid)
    async with httpx.AsyncClient() as client:
        health = (await client.get(f"{stack.base_url}/api/health")).json()["live"]
    print(
        f"idle: {count} sockets held (health says {health['sockets']}); gateway RSS "
        f"{before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB, "
        f"{(after - before) / count / 1024:.1f} KiB per socket"
    )
    await asyncio.gather(*(ws.close() for ws in sockets))


async def fan_out(stack: Stack, count: int, rate: int, seconds: float) -> None:
    ws_base = stack.base_url.replace("http://", "ws://")
    sockets = await open_sockets(ws_base, await tokens(stack.base_url, count))
    latencies: list[float] = []
    expected = int(rate * seconds)

    async def read(ws: ClientConnection) -> None:
        received = 0
        while received < expected:
            message = json.loads(await ws.recv())
            if message.get("type") == "task_created":
                latencies.append(time.time() - float(message["data"]["description"]))
                received += 1

    readers = [asyncio.create_task(read(ws)) for ws in sockets]
    async with rabbitmq_exchange() as exchange:
        started = time.monotonic()
        for sent in range(expected):
            # Paced to the rate: each event leaves at its slot, not in bursts.
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            # The time of publishing travels in the task: the delay is measured to receipt.
            data = task_data(title="bench", description=repr(time.time()))
            await publish_on(
                exchange, EventEnvelope(type=TASK_CREATED, producer="bench", data=data)
            )
    await asyncio.wait(readers, timeout=30)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets))
    if not latencies:
        print("fan-out: nothing delivered")
        return
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(
        f"fan-out: {rate} events/s for {seconds:g} s to {count} sockets: "
        f"{len(latencies)}/{expected * count} messages; latency p50 {p50:.1f} ms, p99 {p99:.1f} ms"
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
    args = parser.parse_args()
    runs = [tuple(map(int, run.split(":"))) for run in args.fan_out or ["100:100"]]
    raise_file_limit(max(args.idle, *(sockets for _, sockets in runs)))
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-live-"))
    # Ten minutes to start: the machine this runs on is often busy with other work.
    stack = Stack("distributed", workdir, database=DATABASE, extra_env=BENCH_ENV, start_timeout=600)
    stack.start()
    try:
        gateway = next(process for process in stack.processes if process.name == "gateway")
        assert gateway.popen is not None
        if args.idle:
            await idle(stack, gateway.popen.pid, args.idle)
        for rate, sockets in runs:
            await fan_out(stack, sockets, rate, args.seconds)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
