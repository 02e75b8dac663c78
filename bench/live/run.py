"""Live-updates benchmark: what one gateway process holds, and how fast it fans events out.

The distributed stack (one uvicorn process per service on the local PostgreSQL, RabbitMQ and
Redis; each user's stream in Redis), then two measurements against its gateway:

1. idle sockets: N sockets opened and held (answering pings); the gateway's RSS before and
   after, per socket.
2. fan-out: S sockets (spread over a few users), events published straight to RabbitMQ at R
   events/s for D seconds (task.created, as the tasks relay would), each carrying the time it
   was published; every socket reads every message, and the delay from publish to receipt is
   measured. Printed: p50, p99, and messages received against expected.

    make bench-live                         # or: python -m bench.live.run --idle 1000
    python -m bench.live.run --idle 10000 --sockets 1000 --rate 500 --seconds 10

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
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import httpx
import psutil
from websockets.asyncio.client import ClientConnection, connect

from bench.tasks.run import percentile
from taskhub_common.contracts import TASK_CREATED
from taskhub_common.events import EXCHANGE, EventEnvelope
from taskhub_common.testing import RABBITMQ_URL, new_user, recreate_database
from tests.e2e.stack import Stack

DATABASE = "taskhub_bench_live"
BENCH_ENV = {
    "RATE_LIMIT_DEFAULT": "1000000/minute",
    "RATE_LIMIT_AUTH": "1000000/minute",
    "WS_HANDSHAKE_RATE": "1000000/minute",
    "WS_MAX_PER_USER": "1000000",
    "LOG_LEVEL": "WARNING",
}
SOCKETS_PER_USER = 100


def raise_file_limit() -> None:
    """Sockets are files: as many as the hard limit allows (the gateway inherits it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
    batch = 200
    for start in range(0, len(tokens_), batch):
        opened = await asyncio.gather(
            *(
                connect(f"{ws_base}/ws", subprotocols=["bearer", token], open_timeout=60)
                for token in tokens_[start : start + batch]
            )
        )
        for ws in opened:
            await ws.recv()  # hello
        sockets.extend(opened)
    return sockets


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


def task_event(published_at: float) -> EventEnvelope:
    now = datetime.now(UTC).isoformat()
    data = {
        "id": str(uuid.uuid4()),
        "title": "bench",
        "description": repr(published_at),
        "status": "todo",
        "priority": "medium",
        "start_date": None,
        "due_date": None,
        "completed_at": None,
        "notify_overdue": True,
        "is_deleted": False,
        "created_by": str(uuid.uuid4()),
        "assigned_to": None,
        "tags": [],
        "created_at": now,
        "updated_at": now,
    }
    return EventEnvelope(type=TASK_CREATED, producer="bench", data=data)


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
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        started = time.monotonic()
        for sent in range(expected):
            # Paced to the rate: each event leaves at its slot, not in bursts.
            delay = started + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            event = task_event(time.time())
            await exchange.publish(
                aio_pika.Message(event.model_dump_json().encode()), routing_key=event.type
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
    parser.add_argument("--sockets", type=int, default=100, help="sockets of the fan-out")
    parser.add_argument("--rate", type=int, default=100, help="events per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    raise_file_limit()
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-live-"))
    stack = Stack("distributed", workdir, database=DATABASE, extra_env=BENCH_ENV)
    stack.start()
    try:
        gateway = next(process for process in stack.processes if process.name == "gateway")
        assert gateway.popen is not None
        await idle(stack, gateway.popen.pid, args.idle)
        await fan_out(stack, args.sockets, args.rate, args.seconds)
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
