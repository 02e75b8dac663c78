"""One OpenAPI document for the whole API, merged from every routed service.

Each service's schemas are namespaced (`identity.UserOut`) so two services may use one name. A
service that is down is left out and tried again on the next request; the gateway never waits
for every service to start.

Every operation also lists the error statuses that the gateway and the shared service code
answer on any route (401 unless public, 404 with a path parameter, 400 and 413 with a body,
422, 429, 431, 503, 504), each with the error body's schema; a route documents the ones of its
own rules (403, 409) itself (`taskhub_common.errors.error_responses`).
"""

import asyncio
import logging
import time
from typing import Any

from gateway.upstream_client import UpstreamClient, UpstreamError, get_json
from gateway.upstreams import Upstream, find_upstream, is_public
from taskhub_common.errors import ERROR_DESCRIPTIONS, ErrorBody

logger = logging.getLogger(__name__)

REF_PREFIX = "#/components/schemas/"
ERROR_SCHEMA = "ErrorBody"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


class MergedOpenAPI:
    def __init__(self, title: str, version: str, table: list[Upstream], ttl: float = 60) -> None:
        self.title = title
        self.version = version
        self.table = table
        self.ttl = ttl
        self._cache: dict[str, Any] | None = None
        self._built_at = 0.0
        self._complete = False

    async def document(
        self, clients: dict[str, UpstreamClient], own: dict[str, Any]
    ) -> dict[str, Any]:
        """The services' documents merged into the gateway's own (`own`: its routes, e.g.
        the WebSocket ticket, with their schemas)."""
        fresh = time.monotonic() - self._built_at < self.ttl
        if self._cache is not None and self._complete and fresh:
            return self._cache
        specs = await asyncio.gather(
            *(self._fetch(upstream, clients[upstream.name]) for upstream in self.table)
        )
        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version},
            "paths": dict(own.get("paths", {})),
            "components": {
                "schemas": dict(own.get("components", {}).get("schemas", {})),
                "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
            },
        }
        for upstream, spec in zip(self.table, specs, strict=True):
            if spec is not None:
                self._merge(document, upstream, spec)
        document["components"]["schemas"][ERROR_SCHEMA] = ErrorBody.model_json_schema()
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method in HTTP_METHODS:
                    _add_error_responses(path, method, operation)
        self._cache = document
        self._built_at = time.monotonic()
        self._complete = all(spec is not None for spec in specs)
        return document

    async def _fetch(self, upstream: Upstream, client: UpstreamClient) -> dict[str, Any] | None:
        try:
            status, document = await get_json(client, "/openapi.json", within=3.0)
        except UpstreamError:
            status, document = 0, None
        if status != 200 or not isinstance(document, dict):
            logger.warning("no OpenAPI from %s", upstream.name)
            return None
        return document

    def _merge(self, document: dict[str, Any], upstream: Upstream, spec: dict[str, Any]) -> None:
        namespace = upstream.name
        for path, item in spec.get("paths", {}).items():
            # Only what the gateway routes to this service is public.
            routed = find_upstream(self.table, path)
            if routed is not None and routed.name == upstream.name:
                document["paths"][path] = _rename_refs(item, namespace)
        schemas = spec.get("components", {}).get("schemas", {})
        for name, schema in schemas.items():
            document["components"]["schemas"][f"{namespace}.{name}"] = _rename_refs(
                schema, namespace
            )


def _rename_refs(node: Any, namespace: str) -> Any:
    if isinstance(node, dict):
        return {
            key: (
                REF_PREFIX + f"{namespace}.{value[len(REF_PREFIX) :]}"
                if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX)
                else _rename_refs(value, namespace)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rename_refs(item, namespace) for item in node]
    return node


def _add_error_responses(path: str, method: str, operation: dict[str, Any]) -> None:
    """The statuses any route may answer, from the gateway or the shared service code."""
    statuses = [422, 429, 431, 503, 504]
    if not is_public(method.upper(), path):
        statuses.append(401)
    if "{" in path:
        statuses.append(404)
    if "requestBody" in operation:
        statuses += [400, 413]
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        response = responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
        # FastAPI's own 422 schema names only the validation list; every error has this body.
        response["content"] = {"application/json": {"schema": {"$ref": REF_PREFIX + ERROR_SCHEMA}}}
        if status in (429, 503):
            response["headers"] = RETRY_AFTER
