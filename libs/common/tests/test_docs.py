"""/docs and /redoc load nothing from another host: every script, style and icon they name is
served by the app itself."""

import re

import httpx
from fastapi import FastAPI

from taskhub_common.docs import docs_router


def app_with_docs() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)
    app.include_router(docs_router("Test API"))
    return app


async def test_the_docs_pages_name_only_their_own_assets_and_those_are_served() -> None:
    transport = httpx.ASGITransport(app=app_with_docs())
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as client:
        for page in ("/docs", "/redoc"):
            response = await client.get(page)
            assert response.status_code == 200
            html = response.text
            assert "Test API" in html
            named = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            named += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
            assert named, html
            assert not [url for url in named if "://" in url or url.startswith("//")], named
            for url in named:
                if url.startswith("/docs/assets/"):
                    asset = await client.get(url)
                    assert asset.status_code == 200, url
                    assert len(asset.content) > 1000, url
        assert (
            "javascript"
            in (await client.get("/docs/assets/swagger-ui-bundle.js")).headers["content-type"]
        )
        assert (await client.get("/docs/assets/nothing.js")).status_code == 404
        assert (await client.get("/docs/assets/..%2F__init__.py")).status_code == 404
