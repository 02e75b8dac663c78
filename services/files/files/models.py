import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, func, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class File(Base):
    """One attachment's metadata; its bytes are in the storage under `storage_key`."""

    __tablename__ = "files"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Tasks live in the tasks service; an id, not a foreign key.
    task_id: Mapped[uuid.UUID]
    # The stored name: generated (uuid + an extension of the verified type), never the user's.
    filename: Mapped[str] = mapped_column(String(100))
    # The name the user gave, sanitised; metadata only.
    original_filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(500), unique=True)
    uploaded_by: Mapped[uuid.UUID]
    is_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        # A task's live files in upload order: the list endpoint.
        Index(
            "ix_files_task_id_created_at",
            "task_id",
            "created_at",
            "id",
            postgresql_where=text("NOT is_deleted"),
        ),
    )
