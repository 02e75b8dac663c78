"""The comments service: Markdown comments on tasks, rendered and sanitised on the server."""

from pathlib import Path

from fastapi import FastAPI

from comments.consumers import TASK_DELETED, on_task_deleted
from comments.router import router
from comments.settings import CommentsSettings
from taskhub_common.app import ServiceSpec, create_service_app
from taskhub_common.users import USER_EVENT_HANDLERS


def create_app(settings: CommentsSettings | None = None) -> FastAPI:
    settings = settings or CommentsSettings()

    return create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router],
            description="Markdown comments on TaskHub tasks, rendered and sanitised.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers={**USER_EVENT_HANDLERS, TASK_DELETED: on_task_deleted},
            asks_tasks=True,
        )
    )
