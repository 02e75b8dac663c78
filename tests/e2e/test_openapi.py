"""The merged OpenAPI of the whole stack documents the error statuses of every route, each
with the error body's schema (most routes once listed only 200 and 422), and the
Idempotency-Key header of every change."""

import httpx

GENERIC = {"422", "429", "431", "503", "504"}


def error_schema(response: dict) -> str:
    return response["content"]["application/json"]["schema"]["$ref"]


async def test_every_route_documents_its_error_statuses(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    paths = document["paths"]
    operations = [
        (path, method, operation)
        for path, item in paths.items()
        if path.startswith("/api/")
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(operations) > 15
    for path, method, operation in operations:
        responses = operation["responses"]
        assert set(responses) >= GENERIC, (method, path, sorted(responses))
        if "{" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in operation:
            assert {"400", "413"} <= set(responses), (method, path)
        if method != "get" and path != "/api/auth/ws-ticket":  # the gateway's own route
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            assert "Idempotency-Key" in headers, (method, path)
        for status, response in responses.items():
            if status[0] in "45":
                assert error_schema(response).endswith("ErrorBody"), (method, path, status)
    assert "401" in paths["/api/tasks"]["get"]["responses"]
    assert "403" in paths["/api/tasks/{task_id}"]["put"]["responses"]
    assert "403" in paths["/api/tasks/{task_id}"]["delete"]["responses"]
    assert {"403", "409"} <= set(paths["/api/tasks/{task_id}/notify-overdue"]["post"]["responses"])
    assert "403" in paths["/api/tasks/{task_id}/comments/{comment_id}"]["put"]["responses"]
    assert "403" in paths["/api/tasks/{task_id}/files/{file_id}"]["delete"]["responses"]
    assert {"413", "415"} <= set(paths["/api/tasks/{task_id}/files"]["post"]["responses"])
    assert "409" in paths["/api/auth/register"]["post"]["responses"]
