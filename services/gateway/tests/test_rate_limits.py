"""Rate limits on Redis: per user when authenticated, per IP otherwise, stricter on auth."""

import asyncio
import uuid

import pytest
from limits import parse
from redis.asyncio import Redis

from gateway.clients import client_ip, client_scheme
from gateway.rate_limits import MAX_BLOCK, RateLimited, RateLimiter
from taskhub_common.testing import REDIS_HOST, bearer, new_user

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


async def allowed(limiter: RateLimiter, limit: str, caller: str, hits: int) -> int:
    """How many of `hits` requests of `caller`, sent back to back, `limiter` lets through."""
    item = parse(limit)
    through = 0
    for _ in range(hits):
        try:
            await limiter.hit(item, "api", caller)
            through += 1
        except RateLimited:
            pass
    return through


async def test_in_memory_each_caller_gets_exactly_its_budget_then_a_retry_after() -> None:
    limiter = RateLimiter(None)
    assert await allowed(limiter, "5/minute", "user:a", 8) == 5
    assert await allowed(limiter, "5/minute", "user:b", 3) == 3
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(parse("5/minute"), "api", "user:a")
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60


async def test_in_memory_a_window_starts_again_and_ended_ones_are_dropped() -> None:
    limiter = RateLimiter(None)
    callers = [f"user:{n}" for n in range(100)]
    for caller in callers:
        assert await allowed(limiter, "1/second", caller, 2) == 1
    await asyncio.sleep(1.05)
    assert await allowed(limiter, "1/second", callers[0], 2) == 1
    limiter.memory._next_sweep = 0  # the next hit sweeps, as it would once a minute
    assert await allowed(limiter, "1/second", callers[1], 1) == 1
    # The other 98 callers' windows had ended: only the two just counted are kept.
    assert len(limiter.memory._windows) == 2


async def counted(limit: str, caller: str) -> int:
    redis = Redis(host=REDIS_HOST)
    try:
        return int(await redis.get("LIMITS:" + parse(limit).key_for("api", caller)) or 0)
    finally:
        await redis.aclose()


async def test_a_fast_caller_gets_exactly_its_budget_from_blocks() -> None:
    """Hits taken from Redis in blocks: one replica lets through exactly the limit, and every
    hit it let through was counted in Redis."""
    limiter = RateLimiter(f"redis://{REDIS_HOST}:6379")
    caller = f"user:{uuid.uuid4()}"
    through = await allowed(limiter, "50/minute", caller, 60)
    assert through == 50
    assert await counted("50/minute", caller) >= 50


async def test_a_fast_caller_needs_a_round_trip_per_block_not_per_request() -> None:
    limiter = RateLimiter(f"redis://{REDIS_HOST}:6379")
    caller = f"user:{uuid.uuid4()}"
    assert await allowed(limiter, "100000/minute", caller, 500) == 500
    taken = await counted("100000/minute", caller)
    # Every hit counted, at most one block more than were used; blocks grew to their largest.
    assert 500 <= taken < 500 + MAX_BLOCK
    assert limiter._blocks[parse("100000/minute").key_for("api", caller)].size == MAX_BLOCK


async def test_replicas_taking_blocks_never_let_more_through_than_the_limit() -> None:
    replicas = [RateLimiter(f"redis://{REDIS_HOST}:6379") for _ in range(3)]
    caller = f"user:{uuid.uuid4()}"
    through = await asyncio.gather(
        *(allowed(replica, "120/minute", caller, 100) for replica in replicas)
    )
    assert sum(through) <= 120
    # Only what a block had left when the budget ran out is lost: a few hits per replica.
    assert sum(through) >= 120 - len(replicas) * (120 // 8)
    assert all(count > 0 for count in through)


class FakeRequest:
    """Only what client_ip and client_scheme read: the peer, the scheme, the forwarded headers
    and the trusted networks."""

    def __init__(
        self, peer: str, forwarded: str | None, trusted: list[str], proto: str | None = None
    ) -> None:
        import ipaddress
        from types import SimpleNamespace

        self.client = SimpleNamespace(host=peer)
        self.scope = {"scheme": "http"}
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}
        if proto is not None:
            self.headers["x-forwarded-proto"] = proto
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


@pytest.mark.parametrize(
    ("peer", "proto", "trusted", "expected"),
    [
        ("198.51.100.7", "https", [], "http"),  # no trusted proxy: header ignored
        ("198.51.100.7", "https", ["10.0.0.0/8"], "http"),  # peer not trusted
        ("10.0.0.5", "https", ["10.0.0.0/8"], "https"),
        ("10.0.0.5", " HTTPS ", ["10.0.0.0/8"], "https"),
        ("10.0.0.5", "gopher", ["10.0.0.0/8"], "http"),  # not a scheme the gateway serves
        ("10.0.0.5", None, ["10.0.0.0/8"], "http"),
    ],
)
def test_client_scheme_believes_forwarded_proto_only_from_trusted_proxies(
    peer, proto, trusted, expected
) -> None:
    assert client_scheme(FakeRequest(peer, None, trusted, proto)) == expected
