"""HTTP endpoints of the files service: thin, the rules live in service.py."""

import uuid
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from files.schemas import FileOut
from files.service import FileService
from files.upload import content_disposition
from taskhub_common.db import get_session, run_after_commit
from taskhub_common.errors import ErrorBody, error_responses
from taskhub_common.internal_auth import TaskSeen
from taskhub_common.routing import commits_itself, service_router
from taskhub_common.users import KnownCaller

router = service_router(prefix="/api/tasks", tags=["files"])


async def get_service(
    request: Request, principal: KnownCaller, session=Depends(get_session)
) -> FileService:
    state = request.app.state
    return FileService(
        session,
        state.storage,
        state.tasks_client,
        state.task_parts,
        state.upload_limits,
        state.settings.SERVICE_NAME,
        principal.user_id,
    )


Service = Annotated[FileService, Depends(get_service)]

# The body is parsed as it streams (not through FastAPI's form handling, which reads it whole
# first), so its schema is declared here for the API documentation.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/{task_id}/files",
    status_code=201,
    openapi_extra=UPLOAD_BODY,
    responses={
        **error_responses(413),
        415: {"model": ErrorBody, "description": "A type that is not accepted"},
    },
)
@commits_itself
async def upload_files(task_id: uuid.UUID, request: Request, service: Service) -> list[FileOut]:
    """The transaction is handled here rather than by the route class: ended before the body
    streams in, so that no database connection waits on a slow client; and committed at the
    end here, so that when the commit fails the bytes just stored are removed too."""
    task = await service.task_for_upload(task_id)
    await service.session.commit()
    try:
        files = await service.upload(task, request.stream(), request.headers.get("content-type"))
        await service.session.commit()
    except BaseException:
        await service.discard_stored()
        raise
    await run_after_commit(service.session)
    return files


@router.get("/{task_id}/files")
async def list_files(task_id: uuid.UUID, service: Service, seen: TaskSeen) -> list[FileOut]:
    return await service.list_files(task_id, task_seen=seen)


@router.get(
    "/{task_id}/files/{file_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
async def download_file(task_id: uuid.UUID, file_id: uuid.UUID, service: Service) -> Response:
    file, stream = await service.download(task_id, file_id)
    return StreamingResponse(
        stream,
        media_type=file.content_type,
        headers={
            "Content-Length": str(file.size),
            "Content-Disposition": content_disposition(file.original_filename),
            "X-Content-Type-Options": "nosniff",
            # Opened in a browser tab anyway, it runs nothing.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-cache",
        },
        background=BackgroundTask(stream.aclose),
    )


@router.delete("/{task_id}/files/{file_id}", status_code=204, responses=error_responses(403))
async def delete_file(task_id: uuid.UUID, file_id: uuid.UUID, service: Service) -> Response:
    await service.delete(task_id, file_id)
    return Response(status_code=204)
