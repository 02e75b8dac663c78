"""The signing key ring: asymmetric keys with a `kid`, published as JWKS.

The private key is kept in identity's database, encrypted with a key derived from SECRET_KEY, so
replicas share it and tokens survive restarts. Only identity ever holds it.
"""

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from identity.models import SigningKey
from identity.settings import IdentitySettings
from taskhub_common.errors import NotAuthenticated


class KeyRing:
    def __init__(self, settings: IdentitySettings) -> None:
        self.settings = settings
        digest = hashlib.sha256(f"taskhub-signing-key:{settings.SECRET_KEY}".encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._active: tuple[str, object] | None = None
        self._public: dict[str, jwt.PyJWK] = {}

    async def load(self, session: AsyncSession) -> None:
        """Load the active key, making one if there is none (once, across replicas)."""
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('identity.signing_keys'))")
        )
        keys = (
            await session.scalars(
                select(SigningKey)
                .where(SigningKey.retired_at.is_(None))
                .order_by(SigningKey.created_at.desc())
            )
        ).all()
        usable = []
        for key in keys:
            private_key = self._decrypt(key)
            if private_key is None:
                # Sealed with another SECRET_KEY: a changed secret retires the keys it sealed,
                # and the tokens they signed stop verifying.
                key.retired_at = datetime.now(UTC)
            else:
                usable.append((key, private_key))
        keys = [key for key, _ in usable]
        active, private_key = next(
            ((key, private) for key, private in usable if key.algorithm == self.settings.ALGORITHM),
            (None, None),
        )
        if active is None:
            active, private_key = self._generate()
            session.add(active)
            keys = [active, *keys]
        self._active = (active.kid, private_key)
        self._public = {key.kid: jwt.PyJWK(key.public_jwk) for key in keys}

    def _decrypt(self, key: SigningKey) -> object | None:
        try:
            pem = self._fernet.decrypt(key.private_key.encode())
        except InvalidToken:
            return None
        return serialization.load_pem_private_key(pem, password=None)

    def _generate(self) -> tuple[SigningKey, object]:
        algorithm = self.settings.ALGORITHM
        if algorithm == "EdDSA":
            private_key: object = ed25519.Ed25519PrivateKey.generate()
            algo = jwt.algorithms.OKPAlgorithm
        else:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            algo = jwt.algorithms.RSAAlgorithm
        kid = uuid.uuid4().hex
        public_jwk = json.loads(algo.to_jwk(private_key.public_key()))  # type: ignore[attr-defined]
        public_jwk.update({"kid": kid, "alg": algorithm, "use": "sig"})
        pem = private_key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        row = SigningKey(
            kid=kid,
            algorithm=algorithm,
            private_key=self._fernet.encrypt(pem).decode(),
            public_jwk=public_jwk,
        )
        return row, private_key

    def jwks(self) -> dict:
        return {"keys": [key._jwk_data for key in self._public.values()]}

    async def get_key(self, kid: str) -> jwt.PyJWK:
        """Identity verifies its own tokens locally (the KeySource of libs/common)."""
        try:
            return self._public[kid]
        except KeyError:
            raise NotAuthenticated() from None

    def seal(self, value: bytes) -> str:
        """Encrypted with the key derived from SECRET_KEY (a pair kept for the refresh grace)."""
        return self._fernet.encrypt(value).decode()

    def unseal(self, sealed: str) -> bytes | None:
        try:
            return self._fernet.decrypt(sealed.encode())
        except InvalidToken:
            return None

    def issue_access_token(self, user_id: uuid.UUID, jti: str) -> tuple[str, int]:
        """`jti` is the id of the refresh token issued with it, so that revoking refresh
        tokens names the access tokens to deny."""
        assert self._active is not None, "KeyRing.load() runs at start"
        kid, private_key = self._active
        now = datetime.now(UTC)
        lifetime = timedelta(minutes=self.settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        claims = {
            "sub": str(user_id),
            "iat": now,
            "exp": now + lifetime,
            "jti": jti,
            "aud": self.settings.JWT_AUDIENCE,
            "iss": self.settings.JWT_ISSUER,
            "typ": "access",
        }
        token = jwt.encode(
            claims, private_key, algorithm=self.settings.ALGORITHM, headers={"kid": kid}
        )
        return token, int(lifetime.total_seconds())
