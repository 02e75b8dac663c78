"""The gateway's own CPU per request in the embedded mode, with no HTTP and no client in the way:
the embedded app and the owning service's app called as plain ASGI in this process, the same
request through the gateway's short way (decision 0092) and straight to the service, in
alternating rounds, each call with a scope of its own as a server would give it.

bench/gateway measures the same through uvicorn and a client on the same two cores, where the
gateway's part is a few tens of us beside some 100 us of HTTP on each side and the spread of
a run is as large as a change; here it stands alone. With `--profile`, a cProfile of the last
round of each side goes to DIR/gateway.prof and DIR/direct.prof, to be compared function by
function (`pstats`).

    python -m bench.gateway.in_process                       # the list page and /me
    python -m bench.gateway.in_process --path /api/tasks/{id} --calls 3000 --profile /tmp/prof

Prints, per path, the median CPU per call of each side, the gateway's extra and the ratio
direct/gateway (the aim: 0.87 or more, the gateway under 15% of the direct call). For a task's
path the gateway answers with the composed view, so its direct side is a plain task read.
Asserts nothing.

Figures, 2026-11-30, a quiet machine at its usual speed (load about 1), 3,000 calls a round,
six rounds: before decision 0098 the list page 333 against 287 us (extra 46 us, 0.86x), `/me`
246 against 201 us (45 us, 0.82x); after, 319-322 against 286 us (33-36 us, 0.89-0.90x) and
229-233 against 198-200 us (32-33 us, 0.86x). The composed task view (a task with one
comment, from warm caches): 341 against a plain read's 223 us (1.53x). The data is
bench/gateway's: one user, 2,000 tasks, a comment on one. After decision 0099, f4f993d and
after in turn, two pairs: `/me` extra 32, 36 -> 31, 31 us (0.87x); the list page 38, 38 ->
35, 32 us (0.89-0.90x).
"""

import argparse
import asyncio
import cProfile
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import uvloop
from starlette.types import ASGIApp, Message, Scope

from bench.gateway.run import seed
from gateway.embedded import create_embedded_app
from gateway.settings import GatewaySettings
from taskhub_common import embedded_postgres
from taskhub_common.http import local_app

ROUNDS = 6


def request_scope(path: str, token: str) -> Scope:
    """A GET as uvicorn hands it over, with the client's few headers (`call` adds the state)."""
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench"),
            (b"accept", b"*/*"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
    }


async def call(app: ASGIApp, template: Scope) -> None:
    # A fresh scope each time: a shared `state` would hand one request's database session
    # to the next.
    scope = {**template, "headers": list(template["headers"]), "state": {}}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"{template['path']} answered {sent[0]['status']}")


async def cpu_per_call(app: ASGIApp, scope: Scope, calls: int, profile: Path | None) -> float:
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    started = time.process_time()
    for _ in range(calls):
        await call(app, scope)
    spent = time.process_time() - started
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return spent / calls * 1e6


async def measure(args: argparse.Namespace) -> None:
    settings = GatewaySettings()
    app = create_embedded_app()
    gateway = app.gateway
    async with gateway.router.lifespan_context(gateway):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as api:
            token, _, task_id = await seed(api)
        for path in args.path:
            path = path.replace("{id}", task_id)
            owner = settings.IDENTITY_URL if path.startswith("/api/auth/") else settings.TASKS_URL
            sides = {"gateway": app, "direct": local_app(owner)}
            scope = request_scope(path, token)
            for side in sides.values():  # caches warm, code paths taken once
                for _ in range(200):
                    await call(side, scope)
            spent: dict[str, list[float]] = {name: [] for name in sides}
            for round_ in range(ROUNDS):
                for name, side in sides.items():
                    last = round_ == ROUNDS - 1
                    profile = args.profile / f"{name}.prof" if args.profile and last else None
                    spent[name].append(await cpu_per_call(side, scope, args.calls, profile))
            through, direct = (statistics.median(spent[name]) for name in sides)
            print(
                f"{path}: through the gateway {through:.0f} us, direct {direct:.0f} us, "
                f"the gateway's extra {through - direct:.0f} us, direct/gateway "
                f"{direct / through:.2f}x (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--path",
        action="append",
        help="a GET path; {id} is a task's id (default: the list page and /api/auth/me)",
    )
    parser.add_argument("--calls", type=int, default=3000, help="calls per side per round")
    parser.add_argument("--profile", type=Path, help="a folder for the last round's profiles")
    args = parser.parse_args()
    args.path = args.path or ["/api/tasks?page=1&page_size=20", "/api/auth/me"]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    # The embedded PostgreSQL and files of a run of its own, as `make run` would make them.
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="taskhub-bench-in-process-"))
    os.environ.setdefault("RATE_LIMIT_DEFAULT", "1000000/minute")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(measure(args))
    finally:
        embedded_postgres.stop_all()


if __name__ == "__main__":
    main()
