import uuid
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from taskhub_common.users import PublicUser


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("content must not be blank")
    return value


# Kept as written (leading spaces matter in Markdown), but not empty or only whitespace.
Content = Annotated[
    str, StringConstraints(min_length=1, max_length=5000), AfterValidator(_not_blank)
]


class CommentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Content


class CommentUpdate(CommentCreate):
    pass


class CommentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    author: PublicUser | None = None
    content: str
    content_html: str
    is_deleted: bool
    created_at: datetime
    updated_at: datetime


class CommentQuery(BaseModel):
    """The list endpoint's paging (oldest comment first)."""

    # Bounded so that the offset fits PostgreSQL's bigint: past the end is an empty page.
    page: int = Field(1, ge=1, le=10**12)
    page_size: int = Field(50, ge=1, le=100)
