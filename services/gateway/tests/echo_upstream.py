"""A small real upstream served by uvicorn on a free port: it echoes what the gateway sent."""

import asyncio
import socket
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


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
            }
        )

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
