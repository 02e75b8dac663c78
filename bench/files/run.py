"""File API benchmark: 100 files of 10 MiB uploaded and downloaded through the gateway.

Runs the distributed stack (gateway, identity, tasks, files as uvicorn processes on the local
PostgreSQL, RabbitMQ and Redis) with its files in an S3 API (moto's server, started here as a
process of its own) and measures over real HTTP:
  - upload and download throughput (MB/s) and per-file latency;
  - the peak resident memory of the gateway and files processes, which stream bodies and so
    should stay far below the bytes that pass through them.

    make bench-files            # or: python -m bench.files.run --files 100 --concurrency 4
Prints figures; asserts nothing.
"""

import argparse
import asyncio
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from taskhub_common.testing import new_user, recreate_database
from tests.e2e.stack import Stack, free_port

MiB = 1024 * 1024
DATABASE = "taskhub_bench_files"


class PeakMemory:
    """Samples the resident memory of some processes in a thread; keeps each one's peak."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak = {name: 0 for name in pids}
        self.start = {name: process.memory_info().rss for name, process in self.processes.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, process in self.processes.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def high_water_mark(pid: int) -> int:
    """The kernel's peak resident size of a process since it started (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[str]:
    """moto's S3 API in a process of its own (not a thread here, which would share this
    process's interpreter lock with the client). Objects above 1 MiB spill to disk."""
    port = free_port()
    log = (workdir / "moto.log").open("ab")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(MiB)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the S3 server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def payload(index: int, size: int) -> bytes:
    """A PDF (as the type check sniffs it) of incompressible bytes, different per index."""
    header = b"%PDF-1.7\n%" + index.to_bytes(4, "big") + b"\n"
    return header + os.urandom(size - len(header))


def mb_per_s(total_bytes: int, seconds: float) -> float:
    return total_bytes / MiB / seconds


async def run(
    api: httpx.AsyncClient, count: int, size: int, concurrency: int
) -> tuple[list[float], float, list[float], float]:
    account = (await api.post("/api/auth/register", json=new_user())).json()
    headers = {"Authorization": f"Bearer {account['access_token']}"}
    task = (await api.post("/api/tasks", headers=headers, json={"title": "bench"})).json()
    url = f"/api/tasks/{task['id']}/files"
    limit = asyncio.Semaphore(concurrency)
    uploaded: list[tuple[str, str]] = []

    async def upload(index: int) -> float:
        async with limit:
            content = payload(index, size)
            began = time.perf_counter()
            response = await api.post(
                url,
                headers=headers,
                files={"files": (f"file-{index}.pdf", content, "application/pdf")},
            )
            elapsed = time.perf_counter() - began
            response.raise_for_status()
            uploaded.append((response.json()[0]["id"], hashlib.sha256(content).hexdigest()))
            return elapsed

    async def download(file_id: str, digest: str) -> float:
        async with limit:
            began = time.perf_counter()
            hasher = hashlib.sha256()
            async with api.stream("GET", f"{url}/{file_id}", headers=headers) as response:
                response.raise_for_status()
                async for chunk in response.aiter_raw():
                    hasher.update(chunk)
            elapsed = time.perf_counter() - began
            if hasher.hexdigest() != digest:
                raise RuntimeError(f"file {file_id} came back different")
            return elapsed

    began = time.perf_counter()
    upload_times = await asyncio.gather(*(upload(i) for i in range(count)))
    upload_wall = time.perf_counter() - began
    began = time.perf_counter()
    download_times = await asyncio.gather(*(download(*item) for item in uploaded))
    download_wall = time.perf_counter() - began
    return upload_times, upload_wall, download_times, download_wall


async def main(count: int, size: int, concurrency: int) -> None:
    await recreate_database(DATABASE)
    workdir = Path(tempfile.mkdtemp(prefix="taskhub-bench-files-"))
    with s3_server(workdir) as endpoint:
        stack = Stack(
            "distributed",
            workdir,
            database=DATABASE,
            extra_env={
                "RATE_LIMIT_DEFAULT": "1000000/minute",
                "LOG_LEVEL": "WARNING",
                "MAX_FILE_SIZE": str(11 * MiB),
                "AWS_BUCKET": "taskhub-bench",
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "CUSTOM_S3_ENDPOINT_URL": endpoint,
            },
        )
        base_url = stack.start()
        try:
            pids = {p.name: p.popen.pid for p in stack.processes if p.name in ("gateway", "files")}
            if "files" not in pids:
                raise RuntimeError("the distributed stack has no files process")
            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as api:
                with PeakMemory(pids) as memory:
                    uploads, upload_wall, downloads, download_wall = await run(
                        api, count, size, concurrency
                    )
            total = count * size
            print(
                f"{count} files of {size / MiB:.0f} MiB, {concurrency} at a time, "
                f"through the gateway to S3 (moto)\n"
            )
            print(f"{'':<10}{'MB/s':>8}{'p50 s':>8}{'p99 s':>8}{'max s':>8}")
            for name, times, wall in (
                ("upload", uploads, upload_wall),
                ("download", downloads, download_wall),
            ):
                ordered = sorted(times)
                print(
                    f"{name:<10}{mb_per_s(total, wall):>8.1f}{statistics.median(times):>8.2f}"
                    f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]:>8.2f}"
                    f"{ordered[-1]:>8.2f}"
                )
            print(f"\n{'process':<10}{'RSS at start':>14}{'peak RSS':>10}{'VmHWM':>10}  (MiB)")
            for name, pid in pids.items():
                print(
                    f"{name:<10}{memory.start[name] / MiB:>14.0f}{memory.peak[name] / MiB:>10.0f}"
                    f"{high_water_mark(pid) / MiB:>10.0f}"
                )
        finally:
            stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size-mib", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.files, args.size_mib * MiB, args.concurrency))
