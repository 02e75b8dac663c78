"""Every query of the files service."""

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from files.models import File


class FileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_many(self, files: list[File]) -> None:
        self.session.add_all(files)
        await self.session.flush()

    async def list_for_task(self, task_id: uuid.UUID) -> list[File]:
        """A task's live files in upload order."""
        statement = (
            select(File)
            .where(File.task_id == task_id, File.is_deleted.is_(False))
            .order_by(File.created_at, File.id)
        )
        return list(await self.session.scalars(statement))

    async def get(
        self, task_id: uuid.UUID, file_id: uuid.UUID, for_update: bool = False
    ) -> File | None:
        statement = select(File).where(
            File.id == file_id, File.task_id == task_id, File.is_deleted.is_(False)
        )
        if for_update:
            statement = statement.with_for_update()
        return await self.session.scalar(statement)
