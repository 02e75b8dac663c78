"""Payloads of the published events, one model per type and version.

Adding a field is fine; removing or renaming one needs a new version.
"""

import uuid
from datetime import datetime

from pydantic import BaseModel


class UserData(BaseModel):
    """`data` of user.registered and user.updated (v1): the user's public fields."""

    id: uuid.UUID
    email: str
    username: str
    full_name: str
    avatar_url: str | None
    is_active: bool
    created_at: datetime


USER_REGISTERED = "user.registered"
# user.updated carries the same fields plus `changes`: {field: new value}.
USER_UPDATED = "user.updated"
