"""Argon2id hashing (bcrypt hashes of the original still verify), off the event loop; and
what makes a new password too weak to accept."""

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher
from zxcvbn.frequency_lists import FREQUENCY_LISTS

# zxcvbn's list of the 30,000 passwords most found in leaks (lower case), kept up by its
# maintainers: only the list is used, not zxcvbn's scoring.
_COMMON_PASSWORDS = frozenset(FREQUENCY_LISTS["passwords"])
# Parts of the user's identity shorter than this are not worth refusing a password over.
_MIN_OWN_PART = 3

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


def weakness(password: str, *, email: str, username: str, full_name: str) -> str | None:
    """Why a new password is refused, or None: one of the most common passwords, or one made
    of the user's own email, username or name (any case)."""
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS:
        return "This password is one of the most common ones; choose another"
    local_part = email.split("@", 1)[0]
    own = {email, local_part, username, full_name, "".join(full_name.split())}
    for part in (part.lower() for part in own):
        if len(part) >= _MIN_OWN_PART and (part in lowered or lowered in part):
            return "The password must not contain your email, username or name"
    return None
