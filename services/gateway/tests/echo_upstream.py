"""A small real upstream served by uvicorn on a free port: it echoes what the gateway sent."""

import asyncio
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


def echo_app() -> FastAPI:
    app = FastAPI()
    app.state.hits = 0

    @app.api_route("/api/echo/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def echo(request: Request, rest: str) -> JSONResponse:
        app.state.hits += 1
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return JSONResponse(
            {
                "path": request.url.path,
                "query": request.url.query,
                "headers": dict(request.headers),
                "body_size": size,
            },
            headers={"Vary": "Accept-Language"},
        )

    @app.get("/api/big/{size}")
    async def big(size: int) -> StreamingResponse:
        """`size` bytes in chunks, with no Content-Length: the gateway must stream them."""

        async def chunks():
            for start in range(0, size, 65536):
                yield b"y" * min(65536, size - start)

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/api/slow/{seconds}")
    async def slow(seconds: float) -> dict:
        await asyncio.sleep(seconds)
        return {"slept": seconds}

    @app.get("/api/cookies")
    async def cookies() -> Response:
        response = Response("two cookies")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    @app.get("/health/ready")
    async def ready() -> dict:
        return {"status": "ok"}

    @app.get("/openapi.json")
    async def no_openapi() -> Response:
        return Response(status_code=404)

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def serve(app: FastAPI) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def task_service_app(comments_status: int = 200) -> FastAPI:
    """Stand-ins for tasks, comments and files, to test how the gateway composes a task."""
    app = FastAPI()
    app.state.part_calls = []

    @app.get("/api/tasks/{task_id}")
    async def task(task_id: str) -> Response:
        if task_id == "missing":
            return JSONResponse({"detail": "Task not found"}, status_code=404)
        return JSONResponse({"id": task_id, "title": "composed", "comments": [], "files": []})

    @app.get("/api/tasks/{task_id}/{part}")
    async def part(task_id: str, part: str, request: Request) -> Response:
        app.state.part_calls.append((part, dict(request.query_params)))
        if part == "comments" and comments_status != 200:
            return JSONResponse({"detail": "broken"}, status_code=comments_status)
        return JSONResponse([{"id": f"{part}-1", "task_id": task_id}])

    @app.get("/health/ready")
    async def ready() -> dict:
        return {"status": "ok"}

    return app
