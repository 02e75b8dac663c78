"""The gateway's /metrics is its own; no public path reaches another service's /metrics."""

from prometheus_client.parser import text_string_to_metric_families

from gateway.upstreams import find_upstream
from taskhub_common.registry import SERVICES


async def test_the_gateway_serves_its_own_metrics(make_gateway, client_for) -> None:
    async with make_gateway() as app, client_for(app) as client:
        assert (await client.get("/api/auth/me")).status_code == 401
        response = await client.get("/metrics")
    assert response.status_code == 200
    routes = {
        (sample.labels.get("route"), sample.labels.get("status"))
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "taskhub_http_requests_total"
    }
    # The gateway's own route template: identity's /api/auth/me was never reached.
    assert ("/api/{path:path}", "401") in routes
    assert all(route != "/api/auth/me" for route, _ in routes)


async def test_no_upstream_owns_the_metrics_path(make_gateway) -> None:
    """The gateway forwards a checked path unchanged, and only to its owner (dot segments are
    refused before routing, test_proxy): so a service's /metrics is reachable only if an
    upstream owned /metrics, which none does."""
    async with make_gateway() as app:
        assert find_upstream(app.state.upstreams, "/metrics") is None
        assert {upstream.name for upstream in app.state.upstreams} >= {
            entry.name for entry in SERVICES
        }
