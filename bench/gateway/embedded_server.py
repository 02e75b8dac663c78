"""The embedded mode for bench/gateway: the embedded app on PORT, as `make run` serves it, plus
the tasks and identity apps of that same process on their own ports, so the bench can call the
owning service straight, without the gateway, on the same event loop and database.

    PORT=8000 TASKS_DIRECT_PORT=8102 IDENTITY_DIRECT_PORT=8101 \
        python -m bench.gateway.embedded_server
"""

import asyncio
import contextlib
import os
import signal

import uvicorn
import uvloop

from gateway.embedded import create_embedded_app
from gateway.settings import GatewaySettings
from taskhub_common import embedded_postgres
from taskhub_common.http import local_app


class SharedLoopServer(uvicorn.Server):
    """A server that leaves signals to the runner: several share one loop and stop together."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve() -> None:
    settings = GatewaySettings()
    gateway = create_embedded_app()
    direct = {
        settings.TASKS_URL: "TASKS_DIRECT_PORT",
        settings.IDENTITY_URL: "IDENTITY_DIRECT_PORT",
    }
    # As `make run` serves (gateway.embedded): X-Forwarded-* are the gateway's to judge.
    quiet = {"log_config": None, "access_log": False, "proxy_headers": False}
    servers = [SharedLoopServer(uvicorn.Config(gateway, port=int(os.environ["PORT"]), **quiet))]
    # The embedded app's lifespan starts every service; these servers only add a door to two.
    servers += [
        SharedLoopServer(
            uvicorn.Config(local_app(url), port=int(os.environ[port]), lifespan="off", **quiet)
        )
        for url, port in direct.items()
    ]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    # The bench calls the direct doors only once the gateway reports every service healthy.
    await asyncio.gather(*(server.serve() for server in servers))


def main() -> None:
    try:
        # uvloop, as uvicorn.run picks it for `make run`.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve())
    finally:
        embedded_postgres.stop_all()


if __name__ == "__main__":
    main()
