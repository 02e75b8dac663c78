"""Comments benchmark: 10,000 comments on one task, then list and create latencies.

Runs the distributed stack and measures through the gateway over real HTTP: p50/p99 of
creating a comment (Markdown rendered and sanitised server-side) while the task fills up to
10,000 comments, then of listing pages of 50 spread over the whole task.

    make bench-comments          # or: python -m bench.comments.run --comments 10000
Prints figures; asserts nothing.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.tasks.run import percentile
from taskhub_common.testing import new_user, recreate_database
from tests.e2e.stack import Stack

MARKDOWN = """**Status** update #{i}

- [link](https://example.com/{i})
- `code` and *emphasis*

| a | b |
|---|---|
| {i} | done |
"""


async def create_comments(api, url, headers, count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    numbers = iter(range(count))

    async def writer() -> None:
        for i in numbers:
            began = time.perf_counter()
            response = await api.post(url, headers=headers, json={"content": MARKDOWN.format(i=i)})
            latencies.append(time.perf_counter() - began)
            response.raise_for_status()

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return latencies


async def main(count: int, requests: int, concurrency: int) -> None:
    await recreate_database("taskhub_bench_comments")
    stack = Stack(
        "distributed",
        Path(tempfile.mkdtemp(prefix="taskhub-bench-")),
        database="taskhub_bench_comments",
        extra_env={"RATE_LIMIT_DEFAULT": "1000000/minute", "LOG_LEVEL": "WARNING"},
    )
    base_url = stack.start()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as api:
            account = (await api.post("/api/auth/register", json=new_user())).json()
            headers = {"Authorization": f"Bearer {account['access_token']}"}
            task = (await api.post("/api/tasks", headers=headers, json={"title": "busy"})).json()
            url = f"/api/tasks/{task['id']}/comments"
            began = time.perf_counter()
            created = await create_comments(api, url, headers, count, concurrency)
            elapsed = time.perf_counter() - began
            print(
                f"created {count} comments in {elapsed:.1f} s ({count / elapsed:.0f}/s, "
                f"{concurrency} writers)"
            )
            print(
                f"create: p50 {statistics.median(created) * 1000:.1f} ms, "
                f"p99 {percentile(created, 0.99) * 1000:.1f} ms"
            )
            pages = count // 50
            listed = []
            for i in range(requests):
                params = {"page": 1 + (i * 37) % pages, "page_size": 50}
                began = time.perf_counter()
                response = await api.get(url, headers=headers, params=params)
                listed.append(time.perf_counter() - began)
                response.raise_for_status()
            print(
                f"list (50 per page, pages spread over {count}): "
                f"p50 {statistics.median(listed) * 1000:.1f} ms, "
                f"p99 {percentile(listed, 0.99) * 1000:.1f} ms"
            )
    finally:
        stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comments", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.comments, args.requests, args.concurrency))
