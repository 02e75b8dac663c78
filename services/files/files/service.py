"""The files use cases. No HTTP here; the request's transaction is committed by the route.

No bytes without metadata and no metadata without bytes: an upload receives and checks every
file before it stores any, stores them all before it writes any row, and removes what it stored
when anything after fails (the route calls discard_stored() when the commit fails). A delete
marks the row and removes the bytes once that is committed.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterable
from datetime import UTC, datetime, timedelta

from anyio import CancelScope
from sqlalchemy.ext.asyncio import AsyncSession

from files.models import File
from files.repository import FileRepository
from files.schemas import FileOut
from files.storage import ByteStream, ObjectMissing, Storage
from files.upload import UploadLimits, receive_files
from taskhub_common.cache import GenerationalCache
from taskhub_common.contracts import FILE_DELETED, FILE_UPLOADED, FileData
from taskhub_common.db import after_commit
from taskhub_common.deleted_tasks import is_task_deleted
from taskhub_common.errors import NotFound, NotPermitted
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import add_events
from taskhub_common.tasks_client import TaskReference, TasksClient

logger = logging.getLogger(__name__)


class FileService:
    def __init__(
        self,
        session: AsyncSession,
        storage: Storage,
        tasks: TasksClient,
        task_parts: GenerationalCache,
        limits: UploadLimits,
        producer: str,
        caller_id: uuid.UUID,
    ) -> None:
        self.session = session
        self.storage = storage
        self.tasks = tasks
        self.task_parts = task_parts
        self.limits = limits
        self.producer = producer
        self.caller_id = caller_id
        self.files = FileRepository(session)
        # Keys this service stored (or began to) and nothing committed refers to yet.
        self.stored: list[str] = []

    async def task_for_upload(self, task_id: uuid.UUID) -> TaskReference:
        """The task files are to be attached to: it must exist and not be deleted (else 404).
        Asked before the body is read, so that a wrong task costs no upload."""
        return await self._live_task(task_id)

    async def upload(
        self,
        task: TaskReference,
        body: AsyncIterable[bytes],
        content_type: str | None,
    ) -> list[FileOut]:
        task_id = task.id
        try:
            async with receive_files(body, content_type, self.limits) as received:
                first_at = datetime.now(UTC)
                files = []
                for position, item in enumerate(received):
                    file_id = uuid.uuid4()
                    filename = f"{file_id}{item.extension}"
                    files.append(
                        File(
                            id=file_id,
                            task_id=task_id,
                            filename=filename,
                            original_filename=item.original_filename,
                            content_type=item.content_type,
                            size=item.size,
                            storage_key=f"tasks/{task_id}/{filename}",
                            uploaded_by=self.caller_id,
                            is_deleted=False,
                            # Distinct and in upload order, so a list shows them as sent.
                            created_at=first_at + timedelta(microseconds=position),
                        )
                    )
                # Recorded before the puts: a put that fails half-way leaves nothing behind.
                self.stored = [file.storage_key for file in files]
                results = await asyncio.gather(
                    *(
                        self.storage.put(file.storage_key, item.path, file.content_type)
                        for file, item in zip(files, received, strict=True)
                    ),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            await self.files.add_many(files)
            presented = [FileOut.model_validate(file) for file in files]
            await self._publish(FILE_UPLOADED, presented, task)
        except BaseException:
            await self.discard_stored()
            raise
        return presented

    async def discard_stored(self) -> None:
        """Remove the bytes of an upload that will not be committed."""
        keys, self.stored = self.stored, []
        # Shielded: a cancelled request still removes what it stored.
        with CancelScope(shield=True):
            for key in keys:
                try:
                    await self.storage.delete(key)
                except Exception:
                    logger.exception("could not remove %s of a failed upload", key)

    async def list_files(self, task_id: uuid.UUID, task_seen: bool = False) -> list[FileOut]:
        """Every active user reads every task's files. With `task_seen` (the gateway had the
        task live from tasks a moment ago), tasks is never asked."""
        if await is_task_deleted(self.session, task_id):
            raise NotFound("Task not found")
        files = await self.files.list_for_task(task_id)
        if not files and not task_seen:
            # No files, or no such task: only the tasks service can tell.
            await self.tasks.get(task_id)
        return [FileOut.model_validate(file) for file in files]

    async def download(self, task_id: uuid.UUID, file_id: uuid.UUID) -> tuple[FileOut, ByteStream]:
        if await is_task_deleted(self.session, task_id):
            raise NotFound("Task not found")
        file = await self.files.get(task_id, file_id)
        if file is None:
            raise NotFound("File not found")
        try:
            stream = await self.storage.open(file.storage_key)
        except ObjectMissing:
            logger.error("the bytes of file %s (%s) are missing", file.id, file.storage_key)
            raise NotFound("File not found") from None
        return FileOut.model_validate(file), stream

    async def delete(self, task_id: uuid.UUID, file_id: uuid.UUID) -> None:
        task = await self._live_task(task_id)
        file = await self.files.get(task_id, file_id, for_update=True)
        if file is None:
            raise NotFound("File not found")
        if self.caller_id not in (file.uploaded_by, task.created_by):
            raise NotPermitted("Only the file's uploader or the task's creator may delete it")
        file.is_deleted = True
        await self.session.flush()
        await self._publish(FILE_DELETED, [FileOut.model_validate(file)], task)
        key = file.storage_key

        async def remove_bytes() -> None:
            # After the commit: a failure here must not turn a done delete into an error.
            try:
                await self.storage.delete(key)
            except Exception:
                logger.exception("could not remove the bytes of deleted file %s", key)

        after_commit(self.session, remove_bytes)

    # Helpers.

    async def _live_task(self, task_id: uuid.UUID) -> TaskReference:
        """The task, which must exist and not be deleted (else 404)."""
        if await is_task_deleted(self.session, task_id):
            raise NotFound("Task not found")
        return await self.tasks.get(task_id)

    async def _publish(self, event_type: str, files: list[FileOut], task: TaskReference) -> None:
        await add_events(
            self.session,
            [
                EventEnvelope(
                    type=event_type,
                    producer=self.producer,
                    actor_id=self.caller_id,
                    aggregate_id=file.id,
                    data=FileData(
                        **file.model_dump(),
                        task_creator_id=task.created_by,
                        task_assignee_id=task.assigned_to,
                    ).model_dump(),
                )
                for file in files
            ],
        )
        # The gateway's copies of file lists are stale once this commits (decision 0044).
        after_commit(self.session, self.task_parts.invalidate)
