"""Analytics benchmark: N tasks through the tasks bulk endpoint, then the analytics service.

Runs the distributed stack (one uvicorn process per service on the local PostgreSQL, RabbitMQ
and Redis). The tasks are a team's: 20 assignees (90% of tasks assigned), a third done at
creation and 2% of the rest completed minutes later through the API (so cycle times vary),
due dates ahead, behind or none (open tasks past due are swept to overdue, as the notifier's
scanner does), one or two of 20 tags. All are created today: the API sets creation times.
Before timing the queries it waits for every service of the stack to fall idle (the notifier works
through the fill's events for minutes after the read model holds them). It measures:
  - the event handling rate: task.created events applied to the read model per second (from
    the first bulk create until the model holds every task, so it includes the tasks relay);
  - overview, performance and trends p50/p99 through the gateway, uncached (a new filter every
    request), cached (the same request again) and uncached with a tag filter (read from the
    tasks rather than from task_counts);
  - the backfill: `python -m analytics.rebuild` reading the whole tasks export;
  - the .xlsx export of every task: time, and the analytics process's peak RSS growth.

    make bench-analytics                # short: 5,000 tasks
    make bench-analytics TASKS=100000   # the full run
Prints figures; asserts nothing. Aims: p50 < 20 ms, > 2,000 events/s, export of 100,000 rows
< 10 s and < 60 MB.
"""

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import psutil
from sqlalchemy import select
from starlette.datastructures import State

from analytics.cache import open_cache
from analytics.consumers import BATCH_EVENT_HANDLERS, EVENT_HANDLERS
from analytics.models import TaskFact
from analytics.repository import AnalyticsRepository, Filters
from analytics.settings import AnalyticsSettings
from bench.stacks import wait_for_quiet
from bench.tasks.run import PRIORITIES, WORDS, percentile
from taskhub_common.bus import BATCH_SIZE
from taskhub_common.consumer import EventConsumer
from taskhub_common.contracts import TASK_UPDATED, TaskData
from taskhub_common.db import Database
from taskhub_common.events import EventEnvelope
from taskhub_common.tasks_client import TasksClient
from taskhub_common.testing import PG_HOST, PG_PORT, PG_USER, new_user, recreate_database
from tests.e2e.stack import REPO, Stack

DATABASE = "taskhub_bench_analytics"
# The longest wait for the stack to fall idle before timings are taken, in seconds.
QUIET_WAIT = 600


ASSIGNEES = 20
TAGS = 20


def task_batch(start: int, size: int, people: list[str]) -> list[dict]:
    """Tasks as a team makes them: most assigned (to one of `people`), a third done, open or
    done past their due date, one or two tags of TAGS."""
    rng = random.Random(start)  # noqa: S311 - test data, not secrets
    now = datetime.now(UTC)
    batch = []
    for i in range(size):
        ahead, behind = timedelta(days=rng.uniform(1, 30)), timedelta(days=rng.uniform(1, 10))
        due = rng.choice([None, None, now + ahead, now - behind])
        batch.append(
            {
                "title": f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{start + i}",
                "description": " ".join(rng.choices(WORDS, k=12)),
                "priority": rng.choice(PRIORITIES),
                "status": rng.choices(["todo", "in_progress", "completed"], [3, 3, 4])[0],
                "due_date": due.isoformat() if due else None,
                "assigned_to": rng.choice(people) if rng.random() < 0.9 else None,
                "tags": [f"team-{n}" for n in rng.sample(range(1, TAGS + 1), rng.randint(1, 2))],
            }
        )
    return batch


async def fill(api: httpx.AsyncClient, headers: dict, total: int, people: list[str]) -> None:
    run = uuid.uuid4().hex
    for start in range(0, total, 1000):
        batch = task_batch(start, min(1000, total - start), people)
        # On a loaded machine the gateway may give up on a bulk create (504) that goes on to
        # commit: the retry carries the same Idempotency-Key, so each batch is created once.
        keyed = {**headers, "Idempotency-Key": f"bench-{run}-{start}"}
        for _ in range(5):
            response = await api.post("/api/tasks/bulk", headers=keyed, json={"tasks": batch})
            if response.status_code not in (409, 502, 503, 504):
                break
            await asyncio.sleep(1)
        response.raise_for_status()


async def register_people(api: httpx.AsyncClient, count: int) -> list[str]:
    """`count` users, once the tasks service knows them all (they may then be assignees)."""
    people = []
    for _ in range(count):
        response = await api.post("/api/auth/register", json=new_user())
        response.raise_for_status()
        people.append(response.json()["user"]["id"])
    return people


async def complete_later(
    api: httpx.AsyncClient, headers: dict, connection: asyncpg.Connection, count: int
) -> None:
    """`count` tasks in progress since their creation completed now, a few at a time: cycle
    times of some minutes beside the bulk-created completed tasks' zero."""
    ids = await connection.fetch(
        "SELECT id FROM tasks.tasks WHERE status = 'in_progress' ORDER BY id LIMIT $1", count
    )
    queue = iter(ids)

    async def worker() -> None:
        for row in queue:
            url = f"/api/tasks/{row['id']}"
            response = await api.put(url, headers=headers, json={"status": "completed"})
            response.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(10)))


async def model_size(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT count(*) FROM analytics.task_facts")


async def wait_for_model(connection: asyncpg.Connection, total: int) -> None:
    while await model_size(connection) < total:  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.05)


async def wait_for_directory(connection: asyncpg.Connection, people: list[str]) -> None:
    """Until the tasks service's directory holds every one of `people`."""
    query = "SELECT count(*) FROM tasks.users WHERE id = ANY($1::uuid[])"
    while await connection.fetchval(query, people) < len(people):  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def wait_for_events(connection: asyncpg.Connection) -> None:
    """Until the tasks outbox is sent and the read model holds every task's last version."""
    behind = """
        SELECT (SELECT count(*) FROM tasks.outbox WHERE sent_at IS NULL)
             + (SELECT count(*) FROM tasks.tasks t JOIN analytics.task_facts f USING (id)
                WHERE f.updated_at < t.updated_at)"""
    while await connection.fetchval(behind):  # noqa: ASYNC110 - polling other processes
        await asyncio.sleep(0.5)


async def describe_model(connection: asyncpg.Connection) -> str:
    statuses = await connection.fetch(
        "SELECT status, count(*) AS n FROM analytics.task_facts GROUP BY 1 ORDER BY 1"
    )
    assigned = await connection.fetchval(
        "SELECT count(*) FROM analytics.task_facts WHERE assigned_to IS NOT NULL"
    )
    keys = await connection.fetchval("SELECT count(*) FROM analytics.task_counts")
    tag_keys = await connection.fetchval("SELECT count(*) FROM analytics.task_tag_counts")
    by_status = ", ".join(f"{row['status']} {row['n']}" for row in statuses)
    return f"{by_status}; {assigned} assigned; {keys} task_counts, {tag_keys} task_tag_counts rows"


async def handler_rates(env: dict[str, str], events: int) -> dict[str, float]:
    """Task events per second through the analytics consumer itself (inbox, upsert, history,
    commit, cache bump), fed from this process: one event per transaction with 20 at a time (as
    the consumer took them before decision 0063), then batches of BATCH_SIZE one after another
    (as the bus hands them over now). Each round is a task.updated of existing tasks, newer
    than the last."""
    settings = AnalyticsSettings(**{**env, "LOG_LEVEL": "WARNING"})
    database = Database(settings)
    state = State()
    state.cache = open_cache(settings)
    consumer = EventConsumer("analytics", database, EVENT_HANDLERS, state, BATCH_EVENT_HANDLERS)
    try:
        async with database.sessionmaker() as session:
            rows = (await session.execute(select(TaskFact).limit(events))).scalars().all()

        def updates() -> list[EventEnvelope]:
            later = datetime.now(UTC)
            return [
                EventEnvelope(
                    type=TASK_UPDATED,
                    producer="tasks",
                    aggregate_id=row.id,
                    data=TaskData(
                        id=row.id,
                        title=row.title,
                        description=row.description,
                        status="in_progress",
                        priority=row.priority,
                        start_date=None,
                        due_date=row.due_date,
                        completed_at=None,
                        notify_overdue=True,
                        is_deleted=False,
                        created_by=row.created_by,
                        assigned_to=row.assigned_to,
                        tags=[],
                        created_at=row.created_at,
                        updated_at=later + timedelta(microseconds=index),
                    ).model_dump(mode="json"),
                )
                for index, row in enumerate(rows)
            ]

        async def one_at_a_time(envelopes: list[EventEnvelope]) -> None:
            queue = iter(envelopes)

            async def worker() -> None:
                for envelope in queue:
                    await consumer.process(envelope)

            await asyncio.gather(*(worker() for _ in range(20)))

        async def in_batches(envelopes: list[EventEnvelope]) -> None:
            for start in range(0, len(envelopes), BATCH_SIZE):
                await consumer.process_batch(envelopes[start : start + BATCH_SIZE])

        rates = {}
        for name, feed in (
            ("one per transaction, 20 at a time", one_at_a_time),
            (f"batches of {BATCH_SIZE}", in_batches),
        ):
            envelopes = updates()
            began = time.perf_counter()
            await feed(envelopes)
            rates[name] = len(envelopes) / (time.perf_counter() - began)
        return rates
    finally:
        await state.cache.store.close()
        await database.dispose()


async def model_latencies(env: dict[str, str], n: int) -> dict[str, list[float]]:
    """The answers' queries alone (the repository on the analytics database, from this
    process, a new `to` filter each call): what the read model costs without HTTP, the gateway
    and the cache."""
    settings = AnalyticsSettings(**{**env, "LOG_LEVEL": "WARNING"})
    database = Database(settings)
    today = datetime.now(UTC).date()
    queries = {
        "overview": lambda repository, where: repository.overview(where),
        "performance": lambda repository, where: repository.performance(where),
        "trends": lambda repository, where: repository.trends(
            where, today - timedelta(days=29), today
        ),
    }
    timings: dict[str, list[float]] = {}
    try:
        for name, query in queries.items():
            for tag in (None, "team-1"):
                label = f"{name}{', tag' if tag else ''}"
                timings[label] = []
                for i in range(n):
                    where = Filters(tag=tag, created_to=today + timedelta(days=1 + i))
                    async with database.sessionmaker() as session:
                        began = time.perf_counter()
                        await query(AnalyticsRepository(session), where)
                        timings[label].append(time.perf_counter() - began)
        return timings
    finally:
        await database.dispose()


async def latencies(api: httpx.AsyncClient, headers: dict, path: str, params_for, n: int):
    timings = []
    for i in range(n):
        began = time.perf_counter()
        response = await api.get(f"/api/analytics/{path}", headers=headers, params=params_for(i))
        timings.append(time.perf_counter() - began)
        response.raise_for_status()
    return timings


def report(name: str, timings: list[float]) -> str:
    p50 = statistics.median(timings) * 1000
    return f"{name:<32}{p50:>8.1f}{percentile(timings, 0.99) * 1000:>8.1f}"


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread; `growth` is peak minus the start."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


async def main(total: int, requests: int) -> None:
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-analytics-"))
    stack = Stack(
        "distributed",
        workdir,
        database=DATABASE,
        extra_env={
            "RATE_LIMIT_DEFAULT": "1000000/minute",
            # The assignees register through the gateway too.
            "RATE_LIMIT_AUTH": "1000/minute",
            "LOG_LEVEL": "WARNING",
        },
        # Seven processes importing at once on a busy machine can take minutes.
        start_timeout=600,
    )
    connection = None
    try:
        base_url = stack.start()
        analytics = next(process for process in stack.processes if process.name == "analytics")
        connection = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database=DATABASE
        )
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as api:
            account = (await api.post("/api/auth/register", json=new_user())).json()
            headers = {"Authorization": f"Bearer {account['access_token']}"}
            people = await register_people(api, ASSIGNEES)
            await wait_for_directory(connection, people)
            began = time.perf_counter()
            await fill(api, headers, total, people)
            filled = time.perf_counter() - began
            await wait_for_model(connection, total)
            applied = time.perf_counter() - began
            print(f"{total} tasks: bulk-created in {filled:.1f} s, all in the read model after")
            print(f"  {applied:.1f} s: {total / applied:.0f} task events/s end to end")
            # As the notifier's scanner does every few minutes: open tasks past due -> overdue.
            settings = AnalyticsSettings(**analytics.env)
            async with httpx.AsyncClient(base_url=settings.TASKS_URL, timeout=120) as tasks_api:
                await TasksClient(tasks_api, settings.SECRET_KEY).sweep_overdue()
            await complete_later(api, headers, connection, min(total // 50, 2000))
            await wait_for_events(connection)
            await connection.execute("VACUUM ANALYZE analytics.task_facts")
            print(f"  the model: {await describe_model(connection)}")
            waited = await wait_for_quiet(stack, QUIET_WAIT)
            print(f"  every service idle after {waited:.0f} s more")

            today = datetime.now(UTC).date()
            print(f"\n{'through the gateway':<32}{'p50 ms':>8}{'p99 ms':>8}")

            def uncached(i: int) -> dict:
                # A different `to` day each request: a distinct cache key, the same rows.
                return {"to": str(today + timedelta(days=1 + i))}

            def tagged(i: int) -> dict:
                # A tag filter is answered from the tasks, not from task_counts (decision 0064).
                return {"tag": "team-1", **uncached(i)}

            for path in ("overview", "performance", "trends"):
                for name, params_for in (
                    ("uncached", uncached),
                    ("cached", lambda i: {}),
                    ("uncached, tag", tagged),
                ):
                    timings = await latencies(api, headers, path, params_for, requests)
                    print(report(f"{path} {name}", timings))

            print(f"\n{'queries alone (no HTTP, cache)':<32}{'p50 ms':>8}{'p99 ms':>8}")
            for name, timings in (await model_latencies(analytics.env, requests)).items():
                print(report(name, timings))

            print("\nanalytics consumer alone:")
            for name, rate in (await handler_rates(analytics.env, min(total, 5000))).items():
                print(f"  {name}: {rate:.0f} task events/s")

            rebuild_env = {**os.environ, **analytics.env}
            began = time.perf_counter()
            rebuild = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "analytics.rebuild",
                cwd=REPO,
                env=rebuild_env,
                stdout=subprocess.DEVNULL,
            )
            assert await rebuild.wait() == 0, "the rebuild failed"
            took = time.perf_counter() - began
            print(f"\nbackfill (make analytics-rebuild) of {total} tasks: {took:.1f} s")

            assert analytics.popen is not None
            with PeakRss(analytics.popen.pid) as rss:
                began = time.perf_counter()
                size = 0
                async with api.stream("GET", "/api/analytics/export", headers=headers) as response:
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                took = time.perf_counter() - began
            print(
                f"export .xlsx of {total} rows: {took:.1f} s, {size / 2**20:.1f} MB, "
                f"analytics peak RSS growth {rss.growth_mb:.1f} MB"
            )
    finally:
        if connection is not None:
            await connection.close()
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5_000, help="100000 for the full run")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.requests))
