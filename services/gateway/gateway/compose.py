"""Responses made of several services: `GET /api/tasks/{id}` is the task (tasks) with its
comments (comments) and files (files)."""

import asyncio
import json
import re

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from gateway.proxy import request_headers, upstream_failure
from gateway.upstream_client import Headers, UpstreamClient, UpstreamError
from taskhub_common.internal_auth import TASK_SEEN_HEADER, task_seen_claim

TASK_VIEW = re.compile(r"/api/tasks/[^/]+")
# The parts hung on a task, by the service that owns them; each is fetched when that service
# is in the routing table.
TASK_PARTS = ("comments", "files")
PART_QUERY = b"page_size=100"


async def compose_task(request: Request, path: str) -> Response:
    """The task, plus whatever parts could be had. A part whose service is down or slow is left
    as an empty list and named in `X-Missing-Parts`; the task itself is never lost to it.

    The task comes first; the parts are then asked together, with a signed claim that the task
    was just seen live, so comments and files need not each ask tasks again (decision 0042).
    They still check the caller's token and their own rules."""
    clients: dict[str, UpstreamClient] = request.app.state.upstream_clients
    headers = request_headers(request, with_body=False)
    try:
        task_response = await clients["tasks"].send("GET", path, b"", headers)
        task_body = await task_response.read()
    except UpstreamError as exc:
        return upstream_failure("tasks", exc)
    if task_response.status != 200:
        return Response(
            task_body,
            status_code=task_response.status,
            media_type=task_response.header(b"content-type"),
            headers={
                name: value
                for name in ("www-authenticate",)
                if (value := task_response.header(name.encode())) is not None
            },
        )
    task = json.loads(task_body)
    claim = task_seen_claim(request.app.state.settings.SECRET_KEY, task["id"]).encode()
    part_headers = [*headers, (TASK_SEEN_HEADER.lower().encode(), claim)]
    parts = [name for name in TASK_PARTS if name in clients]
    part_bodies = await asyncio.gather(
        *(_part(clients[name], f"{path}/{name}", part_headers) for name in parts),
        return_exceptions=True,
    )
    missing = []
    for name, body in zip(parts, part_bodies, strict=True):
        if isinstance(body, bytes):
            task[name] = json.loads(body)
        else:
            missing.append(name)
    return JSONResponse(task, headers={"X-Missing-Parts": ",".join(missing)} if missing else None)


async def _part(client: UpstreamClient, path: str, headers: Headers) -> bytes | None:
    """A part's list as JSON, or None when its service did not give one."""
    response = await client.send("GET", path, PART_QUERY, headers)
    body = await response.read()
    return body if response.status == 200 else None
