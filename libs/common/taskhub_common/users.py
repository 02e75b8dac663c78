"""The local user directory of a service: who exists, fed by identity's `user.*` events.

A service that shows or checks users (a task's creator and assignee, a comment's author) reads
its own copy and never calls identity per request. A caller that the directory does not know yet
(the event is still on its way) is fetched once from identity with the caller's own token.
"""

import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

import httpx
from fastapi import Depends, Request
from pydantic import ConfigDict
from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Uuid, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from taskhub_common.auth import CurrentPrincipal, Principal
from taskhub_common.consumer import EventContext
from taskhub_common.contracts import USER_REGISTERED, USER_UPDATED, UserData, UserSummary
from taskhub_common.db import get_session
from taskhub_common.errors import NotAuthenticated, ServiceUnavailable

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("username", String(100), nullable=False),
    Column("full_name", String(255), nullable=False),
    Column("avatar_url", String(500)),
    Column("is_active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When identity said this; an older event never overwrites a newer one.
    Column("as_of", DateTime(timezone=True), nullable=False),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PublicUser(UserSummary):
    """A user as other users see them (no email: that is for the user themself); the same
    fields as events show them."""

    model_config = ConfigDict(from_attributes=True)


async def upsert_user(session: AsyncSession, user: UserData, as_of: datetime) -> None:
    values = user.model_dump(
        include={"id", "username", "full_name", "avatar_url", "is_active", "created_at"}
    )
    statement = insert(users).values(**values, as_of=as_of)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[users.c.id],
            set_={
                **{key: statement.excluded[key] for key in values if key != "id"},
                "as_of": as_of,
            },
            where=users.c.as_of <= statement.excluded.as_of,
        )
    )


async def on_user_event(ctx: EventContext) -> None:
    """Handler of user.registered and user.updated: the directory takes the newer data."""
    await upsert_user(ctx.session, UserData.model_validate(ctx.event.data), ctx.event.occurred_at)


USER_EVENT_HANDLERS = {USER_REGISTERED: on_user_event, USER_UPDATED: on_user_event}


async def find_users(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, PublicUser]:
    if not ids:
        return {}
    rows = (await session.execute(select(users).where(users.c.id.in_(ids)))).all()
    return {row.id: PublicUser.model_validate(row) for row in rows}


async def active_user_ids(session: AsyncSession, ids: set[uuid.UUID]) -> set[uuid.UUID]:
    if not ids:
        return set()
    return set(
        await session.scalars(select(users.c.id).where(users.c.id.in_(ids), users.c.is_active))
    )


class RecentCallers:
    """Callers found active in this service's directory a moment ago: saves the directory query
    on every request. A deactivation takes up to `ttl` seconds to bite."""

    def __init__(self, ttl: float = 30, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._seen: dict[uuid.UUID, float] = {}

    def __contains__(self, user_id: uuid.UUID) -> bool:
        seen_at = self._seen.get(user_id)
        return seen_at is not None and time.monotonic() - seen_at < self.ttl

    def add(self, user_id: uuid.UUID) -> None:
        if len(self._seen) >= self.max_size:
            self._seen.clear()
        self._seen[user_id] = time.monotonic()


async def ensure_caller_known(
    session: AsyncSession,
    identity: httpx.AsyncClient,
    user_id: uuid.UUID,
    access_token: str,
    recent: RecentCallers,
) -> None:
    """Refuse a deactivated caller, and add a new one to the directory (asking identity) when
    the user.registered event has not arrived yet."""
    if user_id in recent:
        return
    known = (await find_users(session, {user_id})).get(user_id)
    if known is not None:
        if not known.is_active:
            raise NotAuthenticated("This account is deactivated")
        recent.add(user_id)
        return
    try:
        response = await identity.get(
            "/api/auth/me", headers={"Authorization": f"Bearer {access_token}"}
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable("Identity is unavailable") from exc
    if response.status_code == 401:
        raise NotAuthenticated()
    if response.status_code != 200:
        raise ServiceUnavailable("Identity is unavailable")
    user = UserData.model_validate({**response.json(), "email": ""})
    await upsert_user(session, user, _EPOCH)


async def known_caller(
    request: Request, principal: CurrentPrincipal, session: AsyncSession = Depends(get_session)
) -> Principal:
    """The caller, checked against this service's user directory (see ensure_caller_known)."""
    state = request.app.state
    await ensure_caller_known(
        session, state.identity_client, principal.user_id, principal.token, state.recent_callers
    )
    return principal


KnownCaller = Annotated[Principal, Depends(known_caller)]
