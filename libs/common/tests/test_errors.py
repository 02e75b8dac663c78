"""The error pages every service answers with (taskhub_common.errors)."""

import httpx
from fastapi import APIRouter, FastAPI

from taskhub_common.errors import install_error_handlers


def app_with_item_routes() -> FastAPI:
    router = APIRouter(prefix="/api/items")

    @router.get("/{item_id}")
    async def read(item_id: int) -> int:
        return item_id

    @router.put("/{item_id}")
    async def update(item_id: int) -> int:
        return item_id

    @router.delete("/{item_id}")
    async def delete(item_id: int) -> None:
        return None

    @router.post("/bulk")
    async def bulk() -> None:
        return None

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return app


async def test_a_405_names_every_method_of_the_path_and_a_fixed_path_its_own() -> None:
    transport = httpx.ASGITransport(app=app_with_item_routes())
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        templated = await client.request("OPTIONS", "/api/items/7")
        patched = await client.patch("/api/items/7")
        fixed = await client.request("OPTIONS", "/api/items/bulk")
    assert templated.status_code == patched.status_code == fixed.status_code == 405
    # Starlette alone names the first route's methods only ("GET").
    assert templated.headers["allow"] == patched.headers["allow"] == "DELETE, GET, PUT"
    assert fixed.headers["allow"] == "POST"
    assert templated.json()["code"] == "method_not_allowed"
