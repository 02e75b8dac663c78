"""Responses made of several services: `GET /api/tasks/{id}` is the task (tasks) with its
comments (comments) and files (files)."""

import asyncio
import re

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from gateway.proxy import request_headers, upstream_failure
from taskhub_common.internal_auth import TASK_SEEN_HEADER, task_seen_claim

TASK_VIEW = re.compile(r"/api/tasks/[^/]+")
# The parts hung on a task, by the service that owns them; each is fetched when that service
# is in the routing table.
TASK_PARTS = ("comments", "files")
PART_QUERY = {"page_size": "100"}


async def compose_task(request: Request, path: str) -> Response:
    """The task, plus whatever parts could be had. A part whose service is down or slow is left
    as an empty list and named in `X-Missing-Parts`; the task itself is never lost to it.

    The task comes first; the parts are then asked together, with a signed claim that the task
    was just seen live, so comments and files need not each ask tasks again (decision 0042).
    They still check the caller's token and their own rules."""
    clients: dict[str, httpx.AsyncClient] = request.app.state.upstream_clients
    headers = request_headers(request, with_body=False)
    try:
        task_response = await clients["tasks"].get(path, headers=headers)
    except httpx.TransportError as exc:
        return upstream_failure("tasks", exc)
    if task_response.status_code != 200:
        return Response(
            task_response.content,
            status_code=task_response.status_code,
            media_type=task_response.headers.get("content-type"),
            headers={
                name: value
                for name, value in task_response.headers.items()
                if name == "www-authenticate"
            },
        )
    task = task_response.json()
    claim = task_seen_claim(request.app.state.settings.SECRET_KEY, task["id"])
    part_headers = [*headers, (TASK_SEEN_HEADER, claim)]
    parts = [name for name in TASK_PARTS if name in clients]
    part_responses = await asyncio.gather(
        *(
            clients[name].get(f"{path}/{name}", headers=part_headers, params=PART_QUERY)
            for name in parts
        ),
        return_exceptions=True,
    )
    missing = []
    for name, response in zip(parts, part_responses, strict=True):
        if isinstance(response, httpx.Response) and response.status_code == 200:
            task[name] = response.json()
        else:
            missing.append(name)
    return JSONResponse(task, headers={"X-Missing-Parts": ",".join(missing)} if missing else None)
