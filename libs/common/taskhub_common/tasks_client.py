"""Asking the tasks service about a task, for the services that hang things on tasks
(comments, files): the internal API, authenticated with the service token."""

import uuid

import httpx
from pydantic import BaseModel

from taskhub_common.errors import NotFound, ServiceUnavailable
from taskhub_common.internal_auth import service_headers


class TaskReference(BaseModel):
    """What another service needs to know of a live (not deleted) task."""

    id: uuid.UUID
    created_by: uuid.UUID
    assigned_to: uuid.UUID | None


class TasksClient:
    def __init__(self, client: httpx.AsyncClient, secret_key: str) -> None:
        self.client = client
        self.headers = service_headers(secret_key)

    async def get(self, task_id: uuid.UUID) -> TaskReference:
        """The task, or NotFound when it does not exist or was deleted. Any active user may see
        any task, so existence is the whole visibility check."""
        try:
            response = await self.client.get(f"/internal/tasks/{task_id}", headers=self.headers)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable("The tasks service is unavailable") from exc
        if response.status_code == 404:
            raise NotFound("Task not found")
        if response.status_code != 200:
            raise ServiceUnavailable("The tasks service is unavailable")
        return TaskReference.model_validate(response.json())
