"""Argon2id hashing (bcrypt hashes of the original still verify), off the event loop."""

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

_hasher = PasswordHash((Argon2Hasher(), BcryptHasher()))
# Verified when the email is unknown, so that case takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("taskhub-dummy-password")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    if hashed is None:
        await asyncio.to_thread(_hasher.verify, password, _DUMMY_HASH)
        return False
    try:
        return await asyncio.to_thread(_hasher.verify, password, hashed)
    except ValueError:
        return False  # e.g. a bcrypt hash and a password over bcrypt's 72 bytes
