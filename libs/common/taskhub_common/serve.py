"""The container image's entrypoint: one service of the suite per process.

`SERVICE=tasks python -m taskhub_common.serve` runs uvicorn with `tasks.app:create_app` on the
registry's port, in this process (so that it receives the container's SIGTERM), with the
service's logging set up before uvicorn's first line; `... serve --migrate` only brings the
service's schema to head and exits (the Kubernetes init container, decision 0080). The gateway
is not in the registry's SERVICES (it is the one that reads it), so it is named here.
"""

import argparse
import asyncio
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from taskhub_common.logs import configure_logging
from taskhub_common.registry import GATEWAY_PORT, SERVICES
from taskhub_common.settings import ServiceSettings

# uvicorn's --timeout-graceful-shutdown; a pod's terminationGracePeriodSeconds must exceed it.
GRACEFUL_SHUTDOWN_SECONDS = 10


@dataclass(frozen=True)
class Target:
    name: str
    app_factory: str
    port: int

    @property
    def package(self) -> str:
        return self.app_factory.split(".", 1)[0]


def targets() -> tuple[Target, ...]:
    """Every process of the distributed mode: the registry's services and the gateway."""
    return (
        *(Target(entry.name, entry.app_factory, entry.port) for entry in SERVICES),
        Target("gateway", "gateway.app:create_app", GATEWAY_PORT),
    )


def target(name: str) -> Target:
    for candidate in targets():
        if candidate.name == name:
            return candidate
    known = ", ".join(candidate.name for candidate in targets())
    raise SystemExit(f"SERVICE={name!r} is not a TaskHub service (one of: {known})")


def uvicorn_options(chosen: Target, host: str, port: int | None = None) -> dict[str, Any]:
    return {
        "app": chosen.app_factory,
        "factory": True,
        "host": host,
        "port": port or chosen.port,
        # The service's own logging (configure_logging), not uvicorn's plain-text default.
        "log_config": None,
        # RequestContextMiddleware writes the access line, with the request id.
        "access_log": False,
        # The gateway decides whom to believe (TRUSTED_PROXIES, decision 0051), not uvicorn.
        "proxy_headers": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


def migrations_dir(chosen: Target) -> Path | None:
    """`<package>/migrations`, as every service with a database has it; None for the gateway."""
    spec = importlib.util.find_spec(chosen.package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {chosen.package!r} of SERVICE={chosen.name} is not installed")
    directory = Path(spec.origin).parent / "migrations"
    return directory if directory.is_dir() else None


async def migrate(chosen: Target) -> bool:
    """Bring the service's schema to head (under the same advisory lock as at start-up)."""
    from taskhub_common.db import Database

    directory = migrations_dir(chosen)
    if directory is None:
        return False
    database = Database(ServiceSettings(SERVICE_NAME=chosen.name))
    try:
        await database.migrate(directory)
    finally:
        await database.dispose()
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m taskhub_common.serve", description=__doc__)
    parser.add_argument("--migrate", action="store_true", help="migrate the schema and exit")
    args = parser.parse_args(argv)
    chosen = target(os.environ.get("SERVICE", ""))
    if args.migrate:
        migrated = asyncio.run(migrate(chosen))
        print(f"{chosen.name}: {'schema at head' if migrated else 'no database'}")
        return
    port = int(os.environ["PORT"]) if os.environ.get("PORT") else None
    settings = ServiceSettings(SERVICE_NAME=chosen.name)
    configure_logging(settings.SERVICE_NAME, settings.LOG_LEVEL, settings.LOG_FORMAT)
    uvicorn.run(**uvicorn_options(chosen, os.environ.get("HOST", "0.0.0.0"), port))  # noqa: S104


if __name__ == "__main__":
    main()
