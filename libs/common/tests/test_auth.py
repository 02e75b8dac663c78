"""TokenVerifier: EdDSA tokens checked once, then remembered until they expire."""

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from taskhub_common.auth import TokenVerifier
from taskhub_common.errors import NotAuthenticated

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


async def test_refusals_are_not_remembered(keys, private_key) -> None:
    verifier = TokenVerifier(keys, AUDIENCE, ISSUER)
    good = access_token(private_key)
    forged = access_token(Ed25519PrivateKey.generate())
    refresh = access_token(private_key, typ="refresh")
    for token in (forged, refresh, good[:-2] + "AA"):
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
