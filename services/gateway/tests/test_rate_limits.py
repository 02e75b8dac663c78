"""Rate limits on Redis: per user when authenticated, per IP otherwise, stricter on auth."""

import pytest

from gateway.clients import client_ip
from taskhub_common.testing import bearer, new_user

from .conftest import random_ip


async def test_login_and_register_are_limited_per_ip(make_gateway, client_for) -> None:
    async with make_gateway(RATE_LIMIT_AUTH="3/minute") as app:
        ip = random_ip()
        async with client_for(app, ip) as client:
            statuses = [
                (
                    await client.post(
                        "/api/auth/login", json={"email": "x@example.com", "password": "p"}
                    )
                ).status_code
                for _ in range(4)
            ]
            refused = await client.post("/api/auth/register", json=new_user())
        async with client_for(app) as other_client:
            other = await other_client.post("/api/auth/register", json=new_user())
    assert statuses == [401, 401, 401, 429]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert refused.json()["code"] == "rate_limited"
    assert other.status_code == 201
    assert "retry-after" not in other.headers


async def test_authenticated_calls_are_limited_per_user(make_gateway, client_for) -> None:
    async with make_gateway(RATE_LIMIT_DEFAULT="3/minute") as app:
        ip = random_ip()
        async with client_for(app, ip) as client:
            first = (await client.post("/api/auth/register", json=new_user())).json()[
                "access_token"
            ]
            second = (await client.post("/api/auth/register", json=new_user())).json()[
                "access_token"
            ]
            mine = [
                (await client.get("/api/auth/me", headers=bearer(first))).status_code
                for _ in range(4)
            ]
            # Same IP, another user: a counter of its own.
            theirs = await client.get("/api/auth/me", headers=bearer(second))
    assert mine == [200, 200, 200, 429]
    assert theirs.status_code == 200


async def test_anonymous_floods_are_limited_per_ip(make_gateway, client_for) -> None:
    async with make_gateway(RATE_LIMIT_DEFAULT="2/minute") as app, client_for(app) as client:
        statuses = [(await client.get("/api/auth/me")).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_replicas_share_one_budget(make_gateway, client_for) -> None:
    """The counters live in Redis: a second gateway replica sees the first one's count."""
    ip = random_ip()
    async with (
        make_gateway(RATE_LIMIT_AUTH="2/minute") as first,
        make_gateway(RATE_LIMIT_AUTH="2/minute") as second,
    ):
        async with client_for(first, ip) as client:
            statuses = [
                (await client.post("/api/auth/register", json=new_user())).status_code
                for _ in range(2)
            ]
        async with client_for(second, ip) as client:
            refused = await client.post("/api/auth/register", json=new_user())
    assert statuses == [201, 201]
    assert refused.status_code == 429


async def test_limits_hold_when_redis_is_down(make_gateway, client_for) -> None:
    async with (
        make_gateway(REDIS_PORT=1, RATE_LIMIT_AUTH="2/minute") as app,
        client_for(app) as client,
    ):
        statuses = [
            (await client.post("/api/auth/register", json=new_user())).status_code for _ in range(3)
        ]
    assert statuses == [201, 201, 429]


class FakeRequest:
    """Only what client_ip reads: the peer, the header and the trusted networks."""

    def __init__(self, peer: str, forwarded: str | None, trusted: list[str]) -> None:
        import ipaddress
        from types import SimpleNamespace

        self.client = SimpleNamespace(host=peer)
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}
        networks = [ipaddress.ip_network(network) for network in trusted]
        self.app = SimpleNamespace(state=SimpleNamespace(trusted_networks=networks))


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("198.51.100.7", "1.2.3.4", [], "198.51.100.7"),  # no trusted proxy: header ignored
        ("198.51.100.7", "1.2.3.4", ["10.0.0.0/8"], "198.51.100.7"),  # peer not trusted
        ("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.9", ["10.0.0.0/8"], "1.2.3.4"),  # spoofed prefix
        ("10.0.0.5", None, ["10.0.0.0/8"], "10.0.0.5"),
    ],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(
    peer, forwarded, trusted, expected
) -> None:
    assert client_ip(FakeRequest(peer, forwarded, trusted)) == expected
