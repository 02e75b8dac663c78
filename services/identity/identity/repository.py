"""Every query of the identity service."""

import uuid
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from identity.models import RefreshToken, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        return await self.session.scalar(select(User).where(User.email == email.lower()))

    async def email_or_username_taken(self, email: str, username: str) -> str | None:
        """Which of the two is already in use, if any."""
        taken = await self.session.scalar(
            select(User).where(
                or_(User.email == email.lower(), func.lower(User.username) == username.lower())
            )
        )
        if taken is None:
            return None
        return "email" if taken.email == email.lower() else "username"

    async def add(self, user: User) -> User:
        self.session.add(user)
        await self.session.flush()
        await self.session.refresh(user)
        return user

    async def list(self) -> list[User]:
        return list(await self.session.scalars(select(User).order_by(User.created_at, User.id)))


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def get_for_update(self, token_hash: str) -> RefreshToken | None:
        return await self.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
        )

    async def revoke_family(self, family_id: uuid.UUID, since: datetime) -> list[RefreshToken]:
        """Revoke a family; its tokens issued since `since`, whose access tokens may still be
        alive (each access token's jti is its refresh token's id)."""
        await self._revoke(RefreshToken.family_id == family_id)
        return await self._issued_since(RefreshToken.family_id == family_id, since)

    async def revoke_all_of_user(self, user_id: uuid.UUID, since: datetime) -> list[RefreshToken]:
        await self._revoke(RefreshToken.user_id == user_id)
        return await self._issued_since(RefreshToken.user_id == user_id, since)

    async def _revoke(self, which) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(which, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )

    async def _issued_since(self, which, since: datetime) -> list[RefreshToken]:
        return list(
            await self.session.scalars(
                select(RefreshToken).where(which, RefreshToken.created_at >= since)
            )
        )
