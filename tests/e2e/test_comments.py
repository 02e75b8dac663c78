"""The comment API through the gateway, in both modes."""

import uuid

import httpx
import pytest

from taskhub_common.testing import create_task
from tests.e2e.accounts import register


def url(task: dict | str, comment: dict | str | None = None) -> str:
    task_id = task["id"] if isinstance(task, dict) else task
    base = f"/api/tasks/{task_id}/comments"
    if comment is None:
        return base
    return f"{base}/{comment['id'] if isinstance(comment, dict) else comment}"


async def comment(api: httpx.AsyncClient, account: dict, task: dict, content: str) -> dict:
    response = await api.post(url(task), headers=account["headers"], json={"content": content})
    assert response.status_code == 201, response.text
    return response.json()


async def listing(api: httpx.AsyncClient, account: dict, task: dict, **params) -> tuple[list, int]:
    response = await api.get(url(task), headers=account["headers"], params=params)
    assert response.status_code == 200, response.text
    return response.json(), int(response.headers["X-Total-Count"])


async def test_create_list_update_delete(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    created = await comment(api, owner, task, "Looks **good**\nsee [docs](https://example.com)")
    assert created["task_id"] == task["id"]
    assert created["user_id"] == owner["id"]
    assert created["author"]["username"] == owner["user"]["username"]
    assert created["author"]["email"] is None
    assert created["is_deleted"] is False
    assert created["content_html"] == (
        "<p>Looks <strong>good</strong><br>\nsee "
        '<a href="https://example.com" rel="noopener noreferrer">docs</a></p>'
    )
    assert await listing(api, owner, task) == ([created], 1)
    updated = await api.put(
        url(task, created), headers=owner["headers"], json={"content": "```\ncode\n```"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["content_html"] == "<pre><code>code\n</code></pre>"
    assert updated.json()["created_at"] == created["created_at"]
    deleted = await api.delete(url(task, created), headers=owner["headers"])
    assert deleted.status_code == 204
    assert await listing(api, owner, task) == ([], 0)
    for method in ("PUT", "DELETE"):
        response = await api.request(
            method, url(task, created), headers=owner["headers"], json={"content": "again"}
        )
        assert response.status_code == 404, method


async def test_the_task_view_carries_its_comments(api: httpx.AsyncClient) -> None:
    owner, reader = await register(api), await register(api)
    task = await create_task(api, owner["headers"])
    first = await comment(api, owner, task, "first")
    second = await comment(api, reader, task, "second")
    response = await api.get(f"/api/tasks/{task['id']}", headers=reader["headers"])
    assert response.status_code == 200
    assert "comments" not in response.headers.get("X-Missing-Parts", "")
    assert response.json()["comments"] == [first, second]


async def test_anonymous_is_401_everywhere(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    mine = await comment(api, owner, task, "mine")
    for method, path in [
        ("POST", url(task)),
        ("GET", url(task)),
        ("PUT", url(task, mine)),
        ("DELETE", url(task, mine)),
    ]:
        response = await api.request(method, path, json={"content": "anonymous"})
        assert response.status_code == 401, (method, path)
    assert await listing(api, owner, task) == ([mine], 1)


async def test_a_second_user_reads_and_comments_but_may_not_change(
    api: httpx.AsyncClient,
) -> None:
    owner, stranger = await register(api), await register(api)
    task = await create_task(api, owner["headers"])
    mine = await comment(api, owner, task, "mine")
    theirs = await comment(api, stranger, task, "theirs")
    assert await listing(api, stranger, task) == ([mine, theirs], 2)
    changed = await api.put(url(task, mine), headers=stranger["headers"], json={"content": "x"})
    assert changed.status_code == 403
    assert (await api.delete(url(task, mine), headers=stranger["headers"])).status_code == 403
    assert (await api.delete(url(task, theirs), headers=owner["headers"])).status_code == 403
    assert await listing(api, owner, task) == ([mine, theirs], 2)


async def test_unknown_and_deleted_tasks_are_404(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    kept = await comment(api, owner, task, "kept")
    unknown = str(uuid.uuid4())
    for method, path in [("POST", url(unknown)), ("GET", url(unknown))]:
        response = await api.request(method, path, headers=owner["headers"], json={"content": "x"})
        assert response.status_code == 404, (method, path)
    missing = url(task, str(uuid.uuid4()))
    assert (
        await api.put(missing, headers=owner["headers"], json={"content": "x"})
    ).status_code == 404
    deleted = await api.delete(f"/api/tasks/{task['id']}", headers=owner["headers"])
    assert deleted.status_code == 204
    for method, path in [
        ("POST", url(task)),
        ("GET", url(task)),
        ("PUT", url(task, kept)),
        ("DELETE", url(task, kept)),
    ]:
        response = await api.request(method, path, headers=owner["headers"], json={"content": "x"})
        assert response.status_code == 404, (method, path)


@pytest.mark.parametrize(
    "body",
    [{}, {"content": ""}, {"content": "x" * 5001}, {"content": None}, {"text": "x"}],
)
async def test_bad_comment_input_is_422(api: httpx.AsyncClient, body: dict) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    existing = await comment(api, owner, task, "existing")
    response = await api.post(url(task), headers=owner["headers"], json=body)
    assert response.status_code == 422, response.text
    response = await api.put(url(task, existing), headers=owner["headers"], json=body)
    assert response.status_code == 422, response.text
    assert await listing(api, owner, task) == ([existing], 1)


async def test_bad_ids_and_paging_are_422(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    for method, path, params in [
        ("GET", url("not-a-uuid"), {}),
        ("POST", url("not-a-uuid"), {}),
        ("PUT", url(task, "not-a-uuid"), {}),
        ("DELETE", url(task, "not-a-uuid"), {}),
        ("GET", url(task), {"page": 0}),
        ("GET", url(task), {"page_size": 0}),
        ("GET", url(task), {"page_size": 101}),
    ]:
        response = await api.request(
            method, path, headers=owner["headers"], params=params, json={"content": "x"}
        )
        assert response.status_code == 422, (method, path, params)
    assert await listing(api, owner, task) == ([], 0)


async def test_xss_comes_back_inert(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    content = (
        "<script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[x](javascript:alert(1))\n\n"
        '<a href="data:text/html,<script>alert(2)</script>">d</a>\n\n'
        "<style>body{display:none}</style>\n\n<iframe src=https://evil.example></iframe>"
    )
    created = await comment(api, owner, task, content)
    assert created["content"] == content
    html = created["content_html"].lower()
    for needle in ("<script", "onerror", "javascript:", "data:", "<style", "<iframe", "<img"):
        assert needle not in html, needle
    assert html.count('rel="noopener noreferrer"') == 2


async def test_pagination_and_order(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    created = [await comment(api, owner, task, f"n{i}") for i in range(5)]
    ids = [c["id"] for c in created]
    listed, total = await listing(api, owner, task)
    assert ([c["id"] for c in listed], total) == (ids, 5)
    pages = [await listing(api, owner, task, page=page, page_size=2) for page in (1, 2, 3, 4)]
    assert [[c["id"] for c in page] for page, _ in pages] == [ids[:2], ids[2:4], ids[4:], []]
    assert {total for _, total in pages} == {5}


async def test_openapi_holds_the_comment_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    assert {"get", "post"} <= set(paths["/api/tasks/{task_id}/comments"])
    assert {"put", "delete"} <= set(paths["/api/tasks/{task_id}/comments/{comment_id}"])


async def test_trailing_slash_of_the_seed_spa(api: httpx.AsyncClient) -> None:
    owner = await register(api)
    task = await create_task(api, owner["headers"])
    created = await api.post(f"{url(task)}/", headers=owner["headers"], json={"content": "slash"})
    assert created.status_code == 201
    assert (await api.get(f"{url(task)}/", headers=owner["headers"])).json() == [created.json()]
