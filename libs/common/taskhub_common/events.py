"""The event envelope: the published contract between services (docs/events.md)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

EXCHANGE = "taskhub.events"


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventEnvelope(BaseModel):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    producer: str
    actor_id: uuid.UUID | None = None
    aggregate_id: uuid.UUID | None = None
    data: dict[str, Any] = Field(default_factory=dict)
