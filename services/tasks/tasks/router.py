"""HTTP endpoints of the tasks service: thin, the rules live in service.py."""

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from pydantic import TypeAdapter

from taskhub_common.contracts import TaskData
from taskhub_common.db import get_session
from taskhub_common.errors import error_responses
from taskhub_common.internal_auth import ServiceCaller
from taskhub_common.routing import service_router
from taskhub_common.tasks_client import TaskReference
from taskhub_common.users import KnownCaller
from tasks.repository import TaskRepository
from tasks.schemas import (
    DICTS,
    BulkCreate,
    OverdueNotice,
    SweepResult,
    TaskCreate,
    TaskList,
    TaskOut,
    TaskQuery,
    TaskUpdate,
)
from tasks.service import TaskService

router = service_router(prefix="/api/tasks", tags=["tasks"])
internal_router = service_router(
    prefix="/internal/tasks", tags=["internal"], include_in_schema=False
)


async def get_service(
    request: Request, principal: KnownCaller, session=Depends(get_session)
) -> TaskService:
    return TaskService(
        session, request.app.state.cache, request.app.state.settings.SERVICE_NAME, principal.user_id
    )


Service = Annotated[TaskService, Depends(get_service)]
JSON = "application/json"


@router.post("", status_code=201)
async def create_task(body: TaskCreate, service: Service) -> TaskOut:
    return await service.create(body)


@router.post("/bulk", status_code=201, response_model=list[TaskOut])
async def bulk_create(body: BulkCreate, service: Service) -> Response:
    # Views built from the rows just written: serialised once, not validated as a response model.
    body_json = DICTS.dump_json(await service.create_many(body))
    return Response(body_json, status_code=201, media_type=JSON)


@router.get("", response_model=TaskList)
async def list_tasks(query: Annotated[TaskQuery, Query()], service: Service) -> Response:
    return Response(await service.list_json(query), media_type=JSON)


@router.get("/{task_id}", response_model=TaskOut)
async def get_task(task_id: uuid.UUID, service: Service) -> Response:
    return Response(await service.get_json(task_id), media_type=JSON)


@router.put("/{task_id}", responses=error_responses(403))
async def update_task(task_id: uuid.UUID, body: TaskUpdate, service: Service) -> TaskOut:
    return await service.update(task_id, body)


@router.delete("/{task_id}", status_code=204, responses=error_responses(403))
async def delete_task(task_id: uuid.UUID, service: Service) -> Response:
    await service.delete(task_id)
    return Response(status_code=204)


@router.post("/{task_id}/notify-overdue", status_code=202, responses=error_responses(403, 409))
async def notify_overdue(task_id: uuid.UUID, service: Service) -> OverdueNotice:
    await service.notify_overdue(task_id)
    return OverdueNotice(detail="Overdue notice sent", task_id=task_id)


EXPORT_PAGE = TypeAdapter(list[TaskData])


@internal_router.get("/export", response_model=list[TaskData])
async def export_tasks(
    _: ServiceCaller,
    session=Depends(get_session),
    after: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> Response:
    """Every task (deleted ones too) as task events show it, one page in id order after
    `after`: what a read model (analytics) is rebuilt from."""
    views = await TaskRepository(session).export_page(after, limit)
    return Response(EXPORT_PAGE.dump_json(EXPORT_PAGE.validate_python(views)), media_type=JSON)


@internal_router.get("/{task_id}")
async def task_reference(
    task_id: uuid.UUID, request: Request, _: ServiceCaller, session=Depends(get_session)
) -> TaskReference:
    """What comments and files need to know of a task: that it exists (not deleted), and who
    created it and is assigned to it."""
    service = TaskService(
        session, request.app.state.cache, request.app.state.settings.SERVICE_NAME, caller_id=None
    )
    return await service.reference(task_id)


@internal_router.post("/overdue-sweep")
async def overdue_sweep(
    request: Request, _: ServiceCaller, session=Depends(get_session)
) -> SweepResult:
    """Called by the notifier's scanner every few minutes (and run by tasks at start)."""
    service = TaskService(
        session, request.app.state.cache, request.app.state.settings.SERVICE_NAME, caller_id=None
    )
    return SweepResult(marked_overdue=await service.sweep_overdue())
