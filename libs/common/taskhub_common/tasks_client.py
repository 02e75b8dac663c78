"""The tasks service's internal API, authenticated with the service token: for the services
that hang things on tasks (comments, files, the notifier) and the read models built from them
(analytics)."""

import uuid

import httpx
from pydantic import BaseModel

from taskhub_common.contracts import TaskData
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

    async def sweep_overdue(self) -> int:
        """Have tasks mark every due task overdue (it emits task.overdue for each); how many."""
        response = await self.client.post("/internal/tasks/overdue-sweep", headers=self.headers)
        response.raise_for_status()
        return int(response.json()["marked_overdue"])

    async def export_page(self, after: uuid.UUID | None, limit: int) -> list[TaskData]:
        """One page of every task, deleted ones too, as task events show them, by id after
        `after` (keyset paging): what a read model rebuilds from."""
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = str(after)
        response = await self.client.get(
            "/internal/tasks/export", params=params, headers=self.headers
        )
        response.raise_for_status()
        return [TaskData.model_validate(item) for item in response.json()]
