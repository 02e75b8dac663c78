"""GET /api/tasks/{id}: the task with its comments and files, composed by the gateway."""

import httpx

from tests.e2e.accounts import register


async def test_a_task_comes_with_its_comments_and_files(api: httpx.AsyncClient) -> None:
    owner, reader = await register(api), await register(api)
    task = (await api.post("/api/tasks", headers=owner["headers"], json={"title": "full"})).json()
    url = f"/api/tasks/{task['id']}"
    comment = await api.post(
        f"{url}/comments", headers=reader["headers"], json={"content": "**looks good**"}
    )
    assert comment.status_code == 201
    upload = await api.post(
        f"{url}/files",
        headers=owner["headers"],
        files={"files": ("notes.txt", b"plain notes\n", "text/plain")},
    )
    assert upload.status_code == 201

    composed = await api.get(url, headers=reader["headers"])
    assert composed.status_code == 200
    assert "x-missing-parts" not in composed.headers
    body = composed.json()
    assert body["title"] == "full"
    assert [c["content_html"] for c in body["comments"]] == ["<p><strong>looks good</strong></p>"]
    assert [f["original_filename"] for f in body["files"]] == ["notes.txt"]

    assert (await api.delete(url, headers=owner["headers"])).status_code == 204
    assert (await api.get(url, headers=reader["headers"])).status_code == 404
    assert (await api.get(url)).status_code == 401
