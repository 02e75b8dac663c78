"""The ceiling for bench/gateway: a bare ASGI app (no framework) serving the list page of 20
tasks as PostgreSQL builds it with json_agg, over one asyncpg pool. What the hardware gives a
page of tasks with nothing in between; no service can be faster than this.

    CEILING_DB='{"host": ..., "port": ..., "user": ..., "database": ...}' \
        uvicorn bench.gateway.ceiling:app
"""

import json
import os
import uuid

import asyncpg

PAGE = """
SELECT coalesce(json_agg(page), '[]')::text FROM (
    SELECT id, title, description, status, priority, start_date, due_date, completed_at,
           created_by, assigned_to, created_at, updated_at
    FROM tasks.tasks
    WHERE created_by = $1 AND NOT is_deleted
    ORDER BY created_at DESC, id DESC
    LIMIT 20
) AS page
"""


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            if message["type"] == "lifespan.startup":
                address = json.loads(os.environ["CEILING_DB"])
                pool = await asyncpg.create_pool(min_size=4, max_size=8, **address)
                scope["state"]["pool"] = pool
                await send({"type": "lifespan.startup.complete"})
        await scope["state"]["pool"].close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] != "/page":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    # /page?user=<uuid>
    user = uuid.UUID(scope["query_string"].decode().removeprefix("user="))
    body = (await scope["state"]["pool"].fetchval(PAGE, user)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
