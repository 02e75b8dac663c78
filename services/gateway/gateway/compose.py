"""Responses made of several services: `GET /api/tasks/{id}` is the task (tasks) with its
comments (comments) and files (files)."""

import asyncio
import json
import re

from fastapi import Request
from starlette.responses import Response

from gateway.proxy import request_headers, upstream_failure
from gateway.settings import GatewaySettings
from gateway.upstream_client import Headers, UpstreamClient, UpstreamError, UpstreamResponse
from taskhub_common.cache import GenerationalCache, get_in_each, part_store, task_part_cache
from taskhub_common.internal_auth import TASK_SEEN_HEADER, task_seen_claim

TASK_VIEW = re.compile(r"/api/tasks/[^/]+")
# The parts hung on a task, by the service that owns them; each is fetched when that service
# is in the routing table.
TASK_PARTS = ("comments", "files")
PART_QUERY = b"page_size=100"


async def compose_task(request: Request, path: str) -> Response:
    """The task, plus whatever parts could be had. A part whose service is down or slow is left
    as an empty list and named in `X-Missing-Parts`; the task itself is never lost to it.

    Tasks is asked first, and its answer decides: the caller and the task were checked there.
    Each part's list comes from the part's cache (decision 0044), looked up meanwhile (every
    part in one round trip) and used only after that 200; a part not cached is asked of its
    service with a signed claim that the task was just seen live, so comments and files need
    not ask tasks again (decision 0042), and kept for the next read. The lists go into the
    answer as their services wrote them: only the task is parsed and written again."""
    clients: dict[str, UpstreamClient] = request.app.state.upstream_clients
    caches: dict[str, GenerationalCache] = request.app.state.task_part_caches
    parts = [name for name in TASK_PARTS if name in clients]
    key = "task:" + path.rsplit("/", 1)[1]
    headers = request_headers(request, with_body=False)
    try:
        (task_response, task_body), cached = await asyncio.gather(
            _get(clients["tasks"], path, b"", headers),
            get_in_each([caches[name] for name in parts], key),
        )
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
    lists = dict(zip(parts, (value for value, _ in cached), strict=True))
    if uncached := [name for name in parts if lists[name] is None]:
        claim = task_seen_claim(request.app.state.settings.SECRET_KEY, task["id"]).encode()
        part_headers = [*headers, (TASK_SEEN_HEADER.lower().encode(), claim)]
        fetched = await asyncio.gather(
            *(_part(clients[name], f"{path}/{name}", part_headers) for name in uncached),
            return_exceptions=True,
        )
        generations = dict(zip(parts, (generation for _, generation in cached), strict=True))
        kept = []
        for name, body in zip(uncached, fetched, strict=True):
            if isinstance(body, bytes):
                lists[name] = body
                kept.append(caches[name].set(key, body, generations[name]))
        await asyncio.gather(*kept)
    missing = [name for name in parts if lists[name] is None]
    return Response(
        _with_parts(task, {name: lists[name] or b"[]" for name in parts}),
        media_type="application/json",
        headers={"X-Missing-Parts": ",".join(missing)} if missing else None,
    )


def _with_parts(task: dict, parts: dict[str, bytes]) -> bytes:
    """The task's JSON object with each part's list (JSON already) as a member of it."""
    for name in parts:
        task.pop(name, None)
    members = [b'"%s":%s' % (name.encode(), body) for name, body in parts.items()]
    if task:
        own = json.dumps(task, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        members.insert(0, own.encode()[1:-1])
    return b"{" + b",".join(members) + b"}"


async def _get(
    client: UpstreamClient, path: str, query: bytes, headers: Headers
) -> tuple[UpstreamResponse, bytes]:
    response = await client.send("GET", path, query, headers)
    return response, await response.read()


async def _part(client: UpstreamClient, path: str, headers: Headers) -> bytes | None:
    """A part's list as JSON, or None when its service did not give one."""
    response, body = await _get(client, path, PART_QUERY, headers)
    return body if response.status == 200 else None


def part_caches(settings: GatewaySettings) -> dict[str, GenerationalCache]:
    """One cache per part, under the generation its service bumps; all in one store."""
    store = part_store(settings.redis_url)
    return {
        name: task_part_cache(
            settings.redis_url, settings.DB_NAME, name, settings.TASK_PARTS_CACHE_SECONDS, store
        )
        for name in TASK_PARTS
    }
