"""HTTP endpoints of the comments service: thin, the rules live in service.py."""

import uuid
from typing import Annotated

from fastapi import Depends, Query, Request, Response

from comments.schemas import CommentCreate, CommentOut, CommentQuery, CommentUpdate
from comments.service import CommentService
from taskhub_common.db import get_session
from taskhub_common.errors import error_responses
from taskhub_common.internal_auth import TaskSeen
from taskhub_common.routing import service_router
from taskhub_common.users import KnownCaller

router = service_router(prefix="/api/tasks/{task_id}/comments", tags=["comments"])


async def get_service(
    request: Request, principal: KnownCaller, session=Depends(get_session)
) -> CommentService:
    return CommentService(
        session,
        request.app.state.tasks_client,
        request.app.state.task_parts,
        request.app.state.settings.SERVICE_NAME,
        principal.user_id,
    )


Service = Annotated[CommentService, Depends(get_service)]


@router.post("", status_code=201)
async def create_comment(task_id: uuid.UUID, body: CommentCreate, service: Service) -> CommentOut:
    return await service.create(task_id, body)


@router.get(
    "",
    responses={
        200: {
            "headers": {
                "X-Total-Count": {
                    "description": "The number of the task's comments, all pages",
                    "schema": {"type": "integer"},
                }
            }
        }
    },
)
async def list_comments(
    task_id: uuid.UUID,
    query: Annotated[CommentQuery, Query()],
    response: Response,
    service: Service,
    seen: TaskSeen,
) -> list[CommentOut]:
    """The task's comments, oldest first: a list (as the seed's SPA reads it), with the total
    number in `X-Total-Count`."""
    comments, total = await service.list(task_id, query, task_seen=seen)
    response.headers["X-Total-Count"] = str(total)
    return comments


@router.put("/{comment_id}", responses=error_responses(403))
async def update_comment(
    task_id: uuid.UUID, comment_id: uuid.UUID, body: CommentUpdate, service: Service
) -> CommentOut:
    return await service.update(task_id, comment_id, body)


@router.delete("/{comment_id}", status_code=204, responses=error_responses(403))
async def delete_comment(task_id: uuid.UUID, comment_id: uuid.UUID, service: Service) -> Response:
    await service.delete(task_id, comment_id)
    return Response(status_code=204)
