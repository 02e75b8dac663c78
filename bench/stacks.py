"""What more than one bench does with a running stack."""

import asyncio
import time

import psutil

from tests.e2e.stack import Stack


def service_processes(stack: Stack) -> list[psutil.Process]:
    """The stack's own processes (not PostgreSQL, RabbitMQ or Redis)."""
    return [psutil.Process(p.popen.pid) for p in stack.processes if p.popen]


def cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU time the process has used."""
    times = process.cpu_times()
    return times.user + times.system


async def wait_for_quiet(stack: Stack, patience: float, window: float = 1.0) -> float:
    """Until every service is idle (under 5% of a core over `window` s), at most `patience` s:
    consumers work through earlier events after the request that made them has returned, and
    timings taken meanwhile would be the machine's contention. Returns the seconds waited."""
    processes = service_processes(stack)
    began = time.perf_counter()
    while time.perf_counter() - began < patience:
        before = [cpu_seconds(p) for p in processes]
        await asyncio.sleep(window)
        if all(cpu_seconds(p) - b < 0.05 * window for p, b in zip(processes, before, strict=True)):
            break
    return time.perf_counter() - began
