"""TokenVerifier: EdDSA tokens checked once, then remembered until they expire, unless the
deny list names them (in-process and Redis lists)."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from taskhub_common.auth import TokenVerifier
from taskhub_common.errors import NotAuthenticated, ServiceUnavailable
from taskhub_common.revocation import DenyList, InProcessDenyList, RedisDenyList
from taskhub_common.testing import REDIS_HOST

AUDIENCE, ISSUER, KID = "taskhub", "taskhub-identity", "test-key"


class CountingKeys:
    """A key source holding one real Ed25519 public key, counting how often it is asked: each
    ask is one full signature check."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.key = jwt.PyJWK.from_dict({**jwk, "kid": KID, "alg": "EdDSA"})
        self.asked = 0

    async def get_key(self, kid: str) -> jwt.PyJWK:
        self.asked += 1
        if kid != KID:
            raise NotAuthenticated()
        return self.key


@pytest.fixture
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keys(private_key: Ed25519PrivateKey) -> CountingKeys:
    return CountingKeys(private_key)


def access_token(private_key: Ed25519PrivateKey, lifetime: int = 60, **claims: object) -> str:
    now = int(time.time())
    payload = {
        "sub": str(uuid.uuid4()),
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + lifetime,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "typ": "access",
        **claims,
    }
    return jwt.encode(payload, private_key, algorithm="EdDSA", headers={"kid": KID})


async def test_an_accepted_token_is_checked_once(keys, private_key) -> None:
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER)
    token = access_token(private_key)
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert again == first
    assert keys.asked == 1


async def test_a_remembered_token_is_refused_once_expired(keys, private_key) -> None:
    now = time.time()
    clock = [now]
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER, clock=lambda: clock[0])
    token = access_token(private_key, lifetime=30)
    await verifier.verify(token)
    clock[0] = now + 31
    with pytest.raises(NotAuthenticated):
        await verifier.verify(token)


def with_signature_changed(token: str) -> str:
    """The token with one character in the middle of its signature changed (the last character
    also carries padding bits: changing it may leave the signature as it was)."""
    head, _, signature = token.rpartition(".")
    middle = len(signature) // 2
    changed = "B" if signature[middle] == "A" else "A"
    return f"{head}.{signature[:middle]}{changed}{signature[middle + 1 :]}"


async def test_refusals_are_not_remembered(keys, private_key) -> None:
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER)
    good = access_token(private_key)
    forged = access_token(Ed25519PrivateKey.generate())
    refresh = access_token(private_key, typ="refresh")
    for token in (forged, refresh, with_signature_changed(good)):
        for _ in range(2):
            with pytest.raises(NotAuthenticated):
                await verifier.verify(token)
    assert keys.asked == 6  # every attempt checked again
    assert (await verifier.verify(good)).token == good


async def test_the_cache_is_bounded(keys, private_key) -> None:
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER, max_cached=2)
    tokens = [access_token(private_key) for _ in range(3)]
    for token in tokens:
        await verifier.verify(token)
    await verifier.verify(tokens[0])  # the oldest made room for the third: checked again
    await verifier.verify(tokens[2])
    assert keys.asked == 4


@pytest.fixture(params=["in-process", "redis"])
async def deny_list(request) -> AsyncIterator[DenyList]:
    listed = (
        InProcessDenyList()
        if request.param == "in-process"
        else RedisDenyList(f"redis://{REDIS_HOST}:6379/0")
    )
    yield listed
    await listed.close()


async def test_a_denied_jti_wins_over_the_cache(keys, private_key, deny_list) -> None:
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER, deny_list=deny_list)
    jti = uuid.uuid4().hex
    token = access_token(private_key, jti=jti)
    other = access_token(private_key)
    await verifier.verify(token)  # checked and remembered
    await deny_list.deny({jti: int(time.time()) + 60})
    with pytest.raises(NotAuthenticated):
        await verifier.verify(token)
    assert (await verifier.verify(other)).token_id != jti
    # A second verifier (another service, another replica) sees the same list.
    with pytest.raises(NotAuthenticated):
        await TokenVerifier(keys, AUDIENCE, ISSUER, deny_list=deny_list).verify(token)


async def test_denials_end_with_the_token(deny_list) -> None:
    # Two seconds or more to go: a slow machine's round trips must not outlast the entry.
    jti, exp = uuid.uuid4().hex, int(time.time()) + 3
    await deny_list.deny({jti: exp, "already-expired": exp - 4})
    assert await deny_list.is_denied(jti)
    assert not await deny_list.is_denied("already-expired")
    await asyncio.sleep(exp - time.time() + 0.1)
    assert not await deny_list.is_denied(jti)


async def test_an_unreachable_redis_fails_open_for_checks_closed_for_denials() -> None:
    unreachable = RedisDenyList("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        # A check lets the token through (it lives at most to its exp), logged as a warning;
        # a denial that cannot be stored is a 503, so the logout rolls back and is retried.
        assert not await unreachable.is_denied("any")
        with pytest.raises(ServiceUnavailable):
            await unreachable.deny({"any": int(time.time()) + 60})
    finally:
        await unreachable.close()
