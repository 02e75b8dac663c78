"""WebSocket tickets: `POST /api/auth/ws-ticket` gives an authenticated caller a random,
single-use ticket valid a few seconds, for `/ws?ticket=…`, so a browser never puts its access
token in a URL. Kept in Redis when REDIS_HOST is set (any replica may redeem it; GETDEL makes
it single-use), otherwise in memory."""

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Request
from limits import parse
from pydantic import BaseModel
from redis.asyncio import Redis

from taskhub_common.auth import CurrentPrincipal


@dataclass(frozen=True)
class Grant:
    """Who a redeemed ticket (or a token) lets in, and until when (the token's `exp`)."""

    user_id: uuid.UUID
    expires_at: float


class TicketOut(BaseModel):
    ticket: str
    expires_in: int


class TicketStore:
    def __init__(self, redis: Redis | None, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds
        # digest -> (valid until, grant); only without Redis.
        self._memory: dict[str, tuple[float, Grant]] = {}

    async def issue(self, grant: Grant) -> str:
        ticket = secrets.token_urlsafe(32)
        key = _key(ticket)
        if self.redis is not None:
            value = json.dumps({"user_id": str(grant.user_id), "expires_at": grant.expires_at})
            await self.redis.set(key, value, ex=self.ttl)
        else:
            now = time.monotonic()
            self._memory = {k: v for k, v in self._memory.items() if v[0] > now}
            self._memory[key] = (now + self.ttl, grant)
        return ticket

    async def redeem(self, ticket: str) -> Grant | None:
        """The ticket's grant, once: a second redemption, or a late one, gets None."""
        key = _key(ticket)
        if self.redis is not None:
            value = await self.redis.getdel(key)
            if value is None:
                return None
            stored = json.loads(value)
            return Grant(uuid.UUID(stored["user_id"]), stored["expires_at"])
        valid_until, grant = self._memory.pop(key, (0.0, None))
        return grant if grant is not None and valid_until > time.monotonic() else None


def _key(ticket: str) -> str:
    # Only a digest is stored: whoever reads Redis cannot redeem what they see there.
    return "live:ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def ticket_router(rate_limit: str) -> APIRouter:
    router = APIRouter(tags=["live updates"])
    limit = parse(rate_limit)

    @router.post("/api/auth/ws-ticket", response_model=TicketOut)
    async def ws_ticket(request: Request, principal: CurrentPrincipal) -> TicketOut:
        """A single-use ticket for `/ws?ticket=…`, valid for `expires_in` seconds; the socket
        it opens lasts as long as the access token that asked for it."""
        await request.app.state.rate_limiter.hit(limit, "api", f"user:{principal.user_id}")
        tickets: TicketStore = request.app.state.live.tickets
        ticket = await tickets.issue(Grant(principal.user_id, principal.expires_at))
        return TicketOut(ticket=ticket, expires_in=tickets.ttl)

    return router
