"""Starts the suite as real processes for the end-to-end tests (and `make run-distributed`).

embedded:    one process, `python -m gateway.embedded`, on its own PostgreSQL from the wheel.
distributed: every service of taskhub_common.registry and the gateway as separate uvicorn processes
             on the local PostgreSQL, RabbitMQ and Redis (files on an S3 API when the caller
             gives it one; see tests/e2e/conftest.py).
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from taskhub_common.registry import GATEWAY_PORT, SERVICES
from taskhub_common.testing import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    RABBITMQ_URL,
    REDIS_HOST,
    create_database_if_missing,
)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.command,
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 20) -> int:
        """Ctrl-C, as a user would; the process must shut down cleanly on its own."""
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish anything."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Stack:
    mode: str
    workdir: Path
    database: str = "taskhub_e2e"
    # Settings every process of the stack gets, on top of the mode's own.
    extra_env: dict[str, str] = field(default_factory=dict)
    # Extra settings of one service only, by name (e.g. its Redis behind a proxy a test cuts).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # The ports of the registry and PORT for the gateway; otherwise any free ports.
    fixed_ports: bool = False
    # How long the processes may take to come up (six of them import and migrate at once).
    start_timeout: float = 180
    processes: list[Process] = field(default_factory=list)
    base_url: str = ""

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        gateway_port = (
            int(os.environ.get("PORT", GATEWAY_PORT)) if self.fixed_ports else free_port()
        )
        common = {"DATA_DIR": str(self.workdir / "var"), **self.extra_env}
        python = sys.executable
        if self.mode == "embedded":
            self.processes = [
                Process(
                    "embedded",
                    [python, "-m", "gateway.embedded"],
                    {**common, "PORT": str(gateway_port)},
                    self.workdir / "embedded.log",
                )
            ]
        else:
            ports = {
                entry.name: entry.port if self.fixed_ports else free_port() for entry in SERVICES
            }
            servers = {
                "DB_HOST": PG_HOST,
                "DB_PORT": str(PG_PORT),
                "DB_USER": PG_USER,
                "DB_NAME": self.database,
                "RABBITMQ_URL": RABBITMQ_URL,
                "REDIS_HOST": REDIS_HOST,
                **{
                    entry.url_setting: f"http://127.0.0.1:{ports[entry.name]}" for entry in SERVICES
                },
                # Last: what the caller gives wins over the mode's defaults.
                **common,
            }
            self.processes = [
                Process(
                    entry.name,
                    uvicorn(python, entry.app_factory, ports[entry.name]),
                    {**servers, **self.service_env.get(entry.name, {})},
                    self.workdir / f"{entry.name}.log",
                )
                for entry in SERVICES
            ] + [
                Process(
                    "gateway",
                    uvicorn(python, "gateway.app:create_app", gateway_port),
                    servers,
                    self.workdir / "gateway.log",
                )
            ]
        for process in self.processes:
            process.start()
        self.base_url = f"http://127.0.0.1:{gateway_port}"
        try:
            self.wait_healthy(self.start_timeout)
        except BaseException:
            # Not left running (and holding ports and connections) by a start that failed.
            for process in self.processes:
                process.kill()
            raise
        return self.base_url

    def wait_healthy(self, timeout: float = 180) -> None:
        # Generous: seven processes importing at once on two busy cores take a while.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.popen and process.popen.poll() is not None:
                    raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            try:
                health = httpx.get(f"{self.base_url}/api/health", timeout=2).json()
                if health.get("status") == "ok":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)
        raise RuntimeError(f"the {self.mode} stack did not become healthy:\n{logs}")

    def database_address(self) -> dict[str, str | int]:
        """asyncpg.connect() arguments for the stack's database (for tests that look inside)."""
        if self.mode == "embedded":
            socket_dir = (self.workdir / "var" / "pgdata").resolve()
            return {"host": str(socket_dir), "user": "postgres", "database": "taskhub"}
        return {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "database": self.database}

    def stop(self) -> list[int]:
        return [process.stop() for process in reversed(self.processes)]


def uvicorn(python: str, factory: str, port: int) -> list[str]:
    return [
        python,
        "-m",
        "uvicorn",
        factory,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--no-proxy-headers",  # X-Forwarded-* are the gateway's to judge, by TRUSTED_PROXIES
        "--timeout-graceful-shutdown",
        "10",
    ]


def main() -> None:
    """`make run-distributed`: the distributed stack on local servers until Ctrl-C."""
    asyncio.run(create_database_if_missing("taskhub"))
    stack = Stack("distributed", REPO / "var" / "distributed", database="taskhub", fixed_ports=True)
    print(f"TaskHub (distributed) at {stack.start()}; Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
