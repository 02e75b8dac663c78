"""The embedded mode's PostgreSQL: a server that ships as a Python wheel, started by this process.

One server per process (every service of the embedded mode shares it, each in its own schema);
it stops when the process exits. Data lives under DATA_DIR/pgdata and survives restarts.
"""

import json
import logging
import os
import threading
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # On import pgserver asks platformdirs for a runtime folder, which warns when there is no
    # XDG_RUNTIME_DIR (a container, a plain shell) and falls back to /tmp: fine for its lock.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import pgserver

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_servers: dict[Path, "pgserver.PostgresServer"] = {}


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when the last process in its list of handles exits; a process
    killed outright (SIGKILL, out of memory) stays in that list, and the server would then outlive
    every later process. Drop the dead, so the process that takes the server over stops it."""
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        alive = [pid for pid in json.loads(handles.read_text()) if _is_alive(pid)]
        handles.write_text(json.dumps(alive))


def ensure_database(data_dir: Path, database: str) -> str:
    """Start (once) the embedded server under data_dir and return the socket folder."""
    if not database.replace("_", "").isalnum():
        raise ValueError(f"invalid database name {database!r}")
    pgdata = (data_dir / "pgdata").resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            logger.info("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
            _forget_dead_handles(pgdata)
            server = pgserver.get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    return str(pgdata)


def stop_all() -> None:
    """Stop the servers this process started, once the services using them have stopped."""
    with _lock:
        for pgdata, server in list(_servers.items()):
            try:
                server.cleanup()
            except Exception:
                logger.warning("embedded PostgreSQL did not stop cleanly", exc_info=True)
            del _servers[pgdata]
