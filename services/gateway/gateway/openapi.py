"""One OpenAPI document for the whole API, merged from every routed service.

Each service's schemas are namespaced (`identity.UserOut`) so two services may use one name. A
service that is down is left out and tried again on the next request; the gateway never waits
for every service to start.
"""

import asyncio
import logging
import time
from typing import Any

import httpx

from gateway.upstreams import Upstream, find_upstream

logger = logging.getLogger(__name__)

REF_PREFIX = "#/components/schemas/"


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
        self, clients: dict[str, httpx.AsyncClient], own: dict[str, Any]
    ) -> dict[str, Any]:
        """The services' documents merged into the gateway's own (`own`: its routes, e.g.
        the WebSocket ticket, with their schemas)."""
        fresh = time.monotonic() - self._built_at < self.ttl
        if self._cache is not None and self._complete and fresh:
            return self._cache
        specs = await asyncio.gather(
            *(self._fetch(clients[upstream.name]) for upstream in self.table)
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
        self._cache = document
        self._built_at = time.monotonic()
        self._complete = all(spec is not None for spec in specs)
        return document

    async def _fetch(self, client: httpx.AsyncClient) -> dict[str, Any] | None:
        try:
            response = await client.get("/openapi.json", timeout=3.0)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError):
            logger.warning("no OpenAPI from %s", client.base_url)
            return None

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
