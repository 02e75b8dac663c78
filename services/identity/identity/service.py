"""The identity use cases. No HTTP here; the request's transaction is committed by the route."""

import hashlib
import json
import secrets
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from identity.cache import ME, ProfileCache
from identity.keys import KeyRing
from identity.models import RefreshToken, User
from identity.passwords import hash_password, verify_password, weakness
from identity.repository import RefreshTokenRepository, UserRepository
from identity.schemas import AuthResponse, RegisterRequest, UpdateMeRequest, UserOut
from identity.settings import IdentitySettings
from taskhub_common.contracts import USER_REGISTERED, USER_UPDATED, UserData
from taskhub_common.db import after_commit
from taskhub_common.errors import (
    Conflict,
    NotAuthenticated,
    NotPermitted,
    Unprocessable,
    invalid_field,
)
from taskhub_common.events import EventEnvelope
from taskhub_common.outbox import add_event
from taskhub_common.revocation import DenyList

INVALID_CREDENTIALS = "Incorrect email or password"
# Between identity's clock (created_at) and the exp it signed: a denial outlives its token.
CLOCK_SLACK = timedelta(minutes=1)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_user(user: User, viewer_id: uuid.UUID | None) -> UserOut:
    """Other users' emails are not shown: a user sees their own address only."""
    out = UserOut.model_validate(user)
    if user.id != viewer_id:
        out.email = None
    return out


class IdentityService:
    def __init__(
        self,
        session: AsyncSession,
        keys: KeyRing,
        settings: IdentitySettings,
        deny_list: DenyList,
        profiles: ProfileCache,
    ) -> None:
        self.deny_list = deny_list
        self.profiles = profiles
        self.session = session
        self.keys = keys
        self.settings = settings
        self.users = UserRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)

    async def register(self, body: RegisterRequest) -> AuthResponse:
        reason = weakness(
            body.password, email=body.email, username=body.username, full_name=body.full_name
        )
        if reason:
            raise invalid_field("password", reason)
        taken = await self.users.email_or_username_taken(body.email, body.username)
        if taken:
            raise Conflict(f"{taken.capitalize()} already registered")
        user = User(
            email=body.email.lower(),
            username=body.username,
            full_name=body.full_name,
            hashed_password=await hash_password(body.password),
        )
        try:
            user = await self.users.add(user)
        except IntegrityError:
            raise Conflict("Email or username already registered") from None
        await self._publish(USER_REGISTERED, user)
        return await self._new_session(user, family_id=uuid.uuid4())

    async def login(self, email: str, password: str) -> AuthResponse:
        user = await self.users.get_by_email(email)
        valid = await verify_password(password, user.hashed_password if user else None)
        if user is None or not valid or not user.is_active:
            raise NotAuthenticated(INVALID_CREDENTIALS)
        return await self._new_session(user, family_id=uuid.uuid4())

    async def refresh(self, refresh_token: str) -> AuthResponse:
        """Rotate: the presented token is spent and a new one of the same family issued.
        A spent or revoked token presented again means it leaked: the whole family is revoked."""
        token = await self.refresh_tokens.get_for_update(_hash_token(refresh_token))
        if token is None:
            raise NotAuthenticated("Invalid refresh token")
        if self._in_grace(token):
            # Another tab refreshed with this token a moment ago: the same new pair.
            pair = self.keys.unseal(token.successor_sealed or "")
            user = await self.users.get(token.user_id)
            if pair is not None and user is not None and user.is_active:
                return AuthResponse(**json.loads(pair), user=public_user(user, user.id))
        if token.used_at is not None or token.revoked_at is not None:
            await self._revoke(self.refresh_tokens.revoke_family(token.family_id, self._alive()))
            # The revocation must stand although the request fails.
            await self.session.commit()
            raise NotAuthenticated("Refresh token reuse detected; please sign in again")
        if token.expires_at <= datetime.now(UTC):
            raise NotAuthenticated("Refresh token expired")
        user = await self.users.get(token.user_id)
        if user is None or not user.is_active:
            raise NotAuthenticated("Invalid refresh token")
        token.used_at = datetime.now(UTC)
        pair = await self._new_session(user, family_id=token.family_id)
        token.successor_sealed = self.keys.seal(pair.model_dump_json(exclude={"user"}).encode())
        return pair

    async def logout(self, user_id: uuid.UUID, refresh_token: str | None) -> None:
        """Revoke the family of the given refresh token, or every session of the user."""
        if refresh_token is None:
            await self._revoke(self.refresh_tokens.revoke_all_of_user(user_id, self._alive()))
            return
        token = await self.refresh_tokens.get_for_update(_hash_token(refresh_token))
        if token is None:
            raise NotAuthenticated("Invalid refresh token")
        if token.user_id != user_id:
            raise NotPermitted("This refresh token belongs to another user")
        await self._revoke(self.refresh_tokens.revoke_family(token.family_id, self._alive()))

    async def get_user(self, user_id: uuid.UUID) -> User:
        user = await self.users.get(user_id)
        if user is None or not user.is_active:
            raise NotAuthenticated()
        return user

    async def own_profile(self, user_id: uuid.UUID) -> bytes:
        """The caller's own profile as JSON (`GET /me`), cached until that user changes: the
        same answer to every call of a session, which otherwise costs a database read each."""
        cache = self.profiles.of(user_id)
        cached, generation = await cache.get(ME)
        if cached is not None:
            return cached
        profile = public_user(await self.get_user(user_id), user_id).model_dump_json().encode()
        await cache.set(ME, profile, generation)
        return profile

    async def update_me(self, user_id: uuid.UUID, body: UpdateMeRequest) -> User:
        user = await self.get_user(user_id)
        changes = body.model_dump(exclude_unset=True)
        if "full_name" in changes and changes["full_name"] is None:
            raise Unprocessable("full_name cannot be null")
        changed = {key: value for key, value in changes.items() if getattr(user, key) != value}
        for key, value in changed.items():
            setattr(user, key, value)
        if changed:
            await self.session.flush()
            await self.session.refresh(user)
            await self._publish(USER_UPDATED, user, changes=changed)
            # After the commit: dropped before it, a concurrent read could cache the old state.
            after_commit(self.session, self.profiles.of(user_id).invalidate)
        return user

    async def list_users(self) -> list[User]:
        return await self.users.list()

    def _in_grace(self, token: RefreshToken) -> bool:
        grace = timedelta(seconds=self.settings.REFRESH_GRACE_SECONDS)
        return (
            token.used_at is not None
            and token.revoked_at is None
            and token.successor_sealed is not None
            and datetime.now(UTC) - token.used_at <= grace
        )

    def _alive(self) -> datetime:
        """Refresh tokens issued since then came with an access token not yet expired."""
        lifetime = timedelta(minutes=self.settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        return datetime.now(UTC) - lifetime - CLOCK_SLACK

    async def _revoke(self, revoking: Awaitable[list[RefreshToken]]) -> None:
        """Revoke refresh tokens, and deny the access tokens issued with them until their exp."""
        lifetime = timedelta(minutes=self.settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        await self.deny_list.deny(
            {
                token.id.hex: int((token.created_at + lifetime + CLOCK_SLACK).timestamp())
                for token in await revoking
            }
        )

    async def _new_session(self, user: User, family_id: uuid.UUID) -> AuthResponse:
        refresh_token = secrets.token_urlsafe(32)
        row = RefreshToken(
            id=uuid.uuid4(),
            token_hash=_hash_token(refresh_token),
            family_id=family_id,
            user_id=user.id,
            expires_at=datetime.now(UTC) + timedelta(days=self.settings.REFRESH_TOKEN_EXPIRE_DAYS),
        )
        await self.refresh_tokens.add(row)
        access_token, expires_in = self.keys.issue_access_token(user.id, row.id.hex)
        return AuthResponse(
            access_token=access_token,
            expires_in=expires_in,
            refresh_token=refresh_token,
            user=public_user(user, user.id),
        )

    async def _publish(
        self, event_type: str, user: User, changes: dict[str, object] | None = None
    ) -> None:
        data = UserData.model_validate(user, from_attributes=True).model_dump(mode="json")
        if changes is not None:
            data["changes"] = changes
        await add_event(
            self.session,
            EventEnvelope(
                type=event_type,
                producer=self.settings.SERVICE_NAME,
                actor_id=user.id,
                aggregate_id=user.id,
                data=data,
            ),
        )
