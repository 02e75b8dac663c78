"""The files service: attachments of tasks, their bytes in S3 or a local folder."""

from pathlib import Path

from fastapi import FastAPI

from files.consumers import EVENT_HANDLERS
from files.router import router
from files.settings import FilesSettings
from files.storage import make_storage
from files.upload import UploadLimits
from taskhub_common.app import ServiceSpec, create_service_app


def create_app(settings: FilesSettings | None = None) -> FastAPI:
    settings = settings or FilesSettings()

    async def open_clients(app: FastAPI) -> None:
        app.state.upload_limits = UploadLimits(
            max_file_size=settings.MAX_FILE_SIZE,
            allowed_types=settings.allowed_file_types,
            max_files=settings.MAX_FILES_PER_UPLOAD,
            spool_dir=settings.UPLOAD_SPOOL_DIR or None,
        )
        storage = make_storage(settings)
        await storage.start()
        app.state.storage = storage

    async def close_clients(app: FastAPI) -> None:
        await app.state.storage.close()

    return create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router],
            description="Attachments of TaskHub tasks: validated upload, list, download, delete.",
            migrations_dir=Path(__file__).parent / "migrations",
            event_handlers=EVENT_HANDLERS,
            asks_tasks=True,
            task_part="files",
            on_startup=[open_clients],
            on_shutdown=[close_clients],
        )
    )
