"""The comments service: Markdown comments on tasks, rendered and sanitised on the server."""

from pathlib import Path

from fastapi import FastAPI

from comments.consumers import EVENT_HANDLERS
from comments.router import router
from comments.settings import CommentsSettings
from taskhub_common.app import ServiceSpec, create_service_app


def create_app(settings: CommentsSettings | None = None) -> FastAPI:
    settings = settings or CommentsSettings()

    return create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router],
            description="Markdown comments on TaskHub tasks, rendered and sanitised.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers=EVENT_HANDLERS,
            asks_tasks=True,
            task_part="comments",
        )
    )
