"""The services of the suite, in one list that the gateway's routing table, the embedded
runner, the end-to-end stack, the dead-letter tool and the docs' checks all read. A new service
is one entry here (and its package in the workspace)."""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    # "module:function" making the service's ASGI app.
    app_factory: str
    # The setting that tells the others (and the gateway) where it listens.
    url_setting: str
    # Its port in the distributed mode; the URL setting's default.
    port: int
    # Public path prefixes it owns ("/api/tasks/" also owns "/api/tasks").
    prefixes: tuple[str, ...] = ()
    # Paths nested in another service's area (/api/tasks/{id}/comments); checked first.
    patterns: tuple[str, ...] = ()
    # It consumes events on a durable queue `<name>.events` (and so has a dead-letter queue).
    consumes_events: bool = True

    def compiled_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(pattern) for pattern in self.patterns)


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry(
        "identity",
        "identity.app:create_app",
        "IDENTITY_URL",
        8001,
        prefixes=("/api/auth/", "/.well-known/jwks.json"),
        consumes_events=False,
    ),
    ServiceEntry("tasks", "tasks.app:create_app", "TASKS_URL", 8002, prefixes=("/api/tasks/",)),
    ServiceEntry(
        "comments",
        "comments.app:create_app",
        "COMMENTS_URL",
        8003,
        patterns=(r"/api/tasks/[^/]+/comments(/.*)?",),
    ),
    ServiceEntry(
        "files",
        "files.app:create_app",
        "FILES_URL",
        8004,
        patterns=(r"/api/tasks/[^/]+/files(/.*)?",),
    ),
    ServiceEntry(
        "notifier",
        "notifier.app:create_app",
        "NOTIFIER_URL",
        8006,
        prefixes=("/api/notifications/",),
        patterns=(r"/api/tasks/[^/]+/reminders(/.*)?",),
    ),
)

GATEWAY_PORT = 8000


def service(name: str) -> ServiceEntry:
    return next(entry for entry in SERVICES if entry.name == name)
