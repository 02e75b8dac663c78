"""`Idempotency-Key` on the routes that change something (POST, PUT, PATCH, DELETE).

The owning service keeps, per caller and key, a hash of the request and the response it gave,
for 24 hours, in its own schema and in the transaction of the change itself: a retry after the
first request committed replays that response (`Idempotent-Replayed: true`) instead of doing the
change again; the same key with another request is 422; the same key while the first request is
still running is 409. Only successes are kept: a failure changed nothing, so a retry runs again.
See docs/decisions/0090-idempotency-keys.md.
"""

import hashlib
from datetime import timedelta

from fastapi import Request, Response
from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Message

from taskhub_common.db import Database
from taskhub_common.errors import AppError, Conflict, Unprocessable, invalid_field

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEEP = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# The header as the OpenAPI of every change documents it: printable ASCII, no space at either
# end (HTTP would strip it).
HEADER_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and request replays the first response "
    "(Idempotent-Replayed: true) for 24 hours; the same key with another request is 422, "
    "and while the first still runs, 409.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}
METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The response headers a replay repeats; the others (request id, rate limits) belong to a reply.
KEPT_HEADERS = ("content-type", "location", "x-total-count")
ANONYMOUS = "-"
# The status of a key whose request is still running (an endpoint committing on its own).
PENDING = 0
# A pending key older than this was left by a process that died: the key is free again.
PENDING_TIMEOUT = timedelta(minutes=10)

metadata = MetaData()

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The caller's user id, or ANONYMOUS (registration): one caller cannot see another's keys.
    Column("caller", String(64), primary_key=True),
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("request_hash", LargeBinary(32), nullable=False),
    Column("status_code", SmallInteger, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def create_idempotency_keys() -> None:
    """The table, created by a migration of each service with a database."""
    from alembic import op

    metadata.create_all(op.get_bind())


def drop_idempotency_keys() -> None:
    from alembic import op

    op.drop_table("idempotency_keys")


def idempotency_key(request: Request) -> str | None:
    """The request's key, if it is one this module handles; a malformed key is a 422."""
    key = request.headers.get(HEADER)
    if key is None or request.method not in METHODS:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise invalid_field(
            HEADER, f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters", "header"
        )
    return key


class RequestDigest:
    """SHA-256 of method, path, query and body, fed as the body arrives. A multipart body's
    boundary is left out: a client makes a new one for each attempt, and a retry of the same
    upload is the same request."""

    def __init__(self, request: Request) -> None:
        self._hash = hashlib.sha256()
        for part in (request.method, request.url.path, request.url.query):
            self._hash.update(part.encode() + b"\0")
        content_type = request.headers.get("content-type", "")
        boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
        self._boundary = (
            boundary.encode("latin-1") if content_type.startswith("multipart/") else b""
        )
        # The last bytes of a chunk, which may begin a boundary the next chunk ends.
        self._tail = b""

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._hash.update(chunk)
            return
        data = (self._tail + chunk).replace(self._boundary, b"")
        split = max(0, len(data) - (len(self._boundary) - 1))
        self._hash.update(data[:split])
        self._tail = data[split:]

    def digest(self) -> bytes:
        self._hash.update(self._tail)
        self._tail = b""
        return self._hash.digest()


def digest_of(request: Request, body: bytes) -> bytes:
    digest = RequestDigest(request)
    digest.update(body)
    return digest.digest()


async def caller_of(request: Request) -> str | None:
    """Who the key belongs to: the verified token's user, ANONYMOUS without a token, None for a
    token that does not verify (the route answers 401 itself; nothing is kept)."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    verifier = getattr(request.app.state, "token_verifier", None)
    if scheme.lower() != "bearer" or verifier is None:
        return None
    try:
        principal = await verifier.verify(token.strip())
    except AppError:
        return None
    return str(principal.user_id)


class IdempotentRequest:
    """One keyed request, run in `session`: `replay()` before the endpoint, `remember()` after
    a success, both in the session's transaction."""

    def __init__(self, session: AsyncSession, caller: str, key: str, digest: bytes) -> None:
        self.session = session
        self.caller = caller
        self.key = key
        self.digest = digest

    async def replay(self) -> Response | None:
        # A transaction lock on (caller, key): a second request while the first one runs is
        # refused at once instead of waiting to do the same change again.
        locked = await self.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:name, 0))"),
            {"name": f"idempotency:{self.caller}:{self.key}"},
        )
        if not locked:
            raise in_progress()
        row = (
            await self.session.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.caller == self.caller,
                    idempotency_keys.c.key == self.key,
                    idempotency_keys.c.created_at > func.now() - KEEP,
                )
            )
        ).one_or_none()
        if row is None:
            return None
        if row.request_hash != self.digest:
            raise another_request()
        return replay_of(row)

    async def remember(self, response: Response) -> None:
        values = {
            "request_hash": self.digest,
            "status_code": response.status_code,
            "headers": kept_headers(response),
            "body": bytes(response.body),
            "created_at": func.now(),
        }
        statement = insert(idempotency_keys).values(caller=self.caller, key=self.key, **values)
        # A row past its 24 hours (not pruned yet) gives way to the new request.
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=["caller", "key"], set_=values)
        )


class StreamedIdempotentRequest:
    """One keyed request to an endpoint that commits its own transactions (an upload, streamed
    to storage with no transaction open meanwhile). The key is taken by a pending row committed
    before the endpoint runs, the body hashed as the endpoint reads it, and the response kept in
    a transaction of its own once the endpoint is done. (A process dying in between leaves the
    key pending: 409 until PENDING_TIMEOUT, then the key is free again.)"""

    def __init__(self, database: Database, caller: str, key: str, request: Request) -> None:
        self.database = database
        self.caller = caller
        self.key = key
        self.request = request
        self.digest = RequestDigest(request)
        self._this_key = (idempotency_keys.c.caller == caller) & (idempotency_keys.c.key == key)

    async def begin(self) -> Response | None:
        pending = {
            "request_hash": b"",
            "status_code": PENDING,
            "headers": {},
            "body": b"",
            "created_at": func.now(),
        }
        table = idempotency_keys.c
        abandoned = (
            (table.status_code == PENDING) & (table.created_at <= func.now() - PENDING_TIMEOUT)
        ) | (table.created_at <= func.now() - KEEP)
        statement = (
            insert(idempotency_keys)
            .values(caller=self.caller, key=self.key, **pending)
            .on_conflict_do_update(index_elements=["caller", "key"], set_=pending, where=abandoned)
            .returning(table.key)
        )
        async with self.database.sessionmaker() as session, session.begin():
            if await session.scalar(statement) is not None:
                self._hash_the_body_as_it_is_read()
                return None
            row = (
                await session.execute(select(idempotency_keys).where(self._this_key))
            ).one_or_none()
        if row is None or row.status_code == PENDING:
            raise in_progress()
        # Done before: this request is its retry only if its body is the same.
        async for chunk in self.request.stream():
            self.digest.update(chunk)
        if self.digest.digest() != row.request_hash:
            raise another_request()
        return replay_of(row)

    def _hash_the_body_as_it_is_read(self) -> None:
        receive = self.request._receive

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.digest.update(message.get("body", b""))
            return message

        self.request._receive = hashing_receive

    async def end(self, response: Response | None) -> None:
        """Keep a success's response; free the key after a failure (`response` None: raised)."""
        async with self.database.sessionmaker() as session, session.begin():
            if response is None or response.status_code >= 400 or not hasattr(response, "body"):
                await session.execute(
                    delete(idempotency_keys).where(
                        self._this_key, idempotency_keys.c.status_code == PENDING
                    )
                )
                return
            headers = kept_headers(response)
            await session.execute(
                update(idempotency_keys)
                .where(self._this_key)
                .values(
                    request_hash=self.digest.digest(),
                    status_code=response.status_code,
                    headers=headers,
                    body=bytes(response.body),
                    created_at=func.now(),
                )
            )


def in_progress() -> Conflict:
    return Conflict(
        "A request with this Idempotency-Key is still in progress", headers={"Retry-After": "1"}
    )


def another_request() -> Unprocessable:
    return Unprocessable(
        "This Idempotency-Key was used with another request (method, path or body)"
    )


def kept_headers(response: Response) -> dict[str, str]:
    return {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}


def replay_of(row: Row) -> Response:
    headers = {**row.headers, REPLAYED_HEADER: "true"}
    return Response(row.body, status_code=row.status_code, headers=headers)


async def prune_idempotency_keys(session: AsyncSession) -> None:
    # A service without write routes (analytics) has no such table: its relay must not fail.
    if (await session.execute(select(func.to_regclass(idempotency_keys.name)))).scalar() is None:
        return
    await session.execute(
        delete(idempotency_keys).where(idempotency_keys.c.created_at <= func.now() - KEEP)
    )
