import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class FileOut(BaseModel):
    """An attachment as the API shows it (the original monolith's shape)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_id: uuid.UUID
    filename: str
    original_filename: str
    content_type: str
    size: int
    uploaded_by: uuid.UUID
    created_at: datetime
