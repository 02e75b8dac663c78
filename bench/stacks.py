"""What more than one bench does with a running stack."""

import asyncio
import time

import psutil

from tests.e2e.stack import Stack


async def wait_for_quiet(stack: Stack, patience: float) -> float:
    """Until every service is idle (under 5% of a core over a second), at most `patience` s:
    consumers work through earlier events after the request that made them has returned, and
    timings taken meanwhile would be the machine's contention. Returns the seconds waited."""
    processes = [psutil.Process(p.popen.pid) for p in stack.processes if p.popen]
    began = time.perf_counter()
    while time.perf_counter() - began < patience:
        before = [sum(p.cpu_times()[:2]) for p in processes]
        await asyncio.sleep(1)
        if all(sum(p.cpu_times()[:2]) - b < 0.05 for p, b in zip(processes, before, strict=True)):
            break
    return time.perf_counter() - began
