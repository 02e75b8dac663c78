"""A route class that commits the request's transaction before the response is sent.

Services never commit: the use case runs in the request's session, and this route commits it
once the endpoint returned a success, so a failed commit is still reported to the client. (Code
after `yield` in a dependency runs after the response has gone, too late to report a failure.)
A request with an `Idempotency-Key` runs in a session the route opens itself, so that the key is
checked and its response kept in the transaction of the change (taskhub_common.idempotency).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from taskhub_common.db import Database, run_after_commit
from taskhub_common.idempotency import (
    HEADER_PARAMETER,
    IdempotentRequest,
    StreamedIdempotentRequest,
    caller_of,
    digest_of,
    idempotency_key,
)

CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


class TransactionalRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if self.methods & CHANGES:
            # Documented where it is honoured, so clients (and generated ones) know to send it.
            self.openapi_extra = {
                **(self.openapi_extra or {}),
                "parameters": [*(self.openapi_extra or {}).get("parameters", []), HEADER_PARAMETER],
            }

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def commit_then_respond(request: Request) -> Response:
            key = idempotency_key(request)
            database = getattr(request.app.state, "database", None)
            caller = await caller_of(request) if key is not None else None
            if caller is None or database is None:
                return await finish(request, await handler(request))
            if getattr(self.endpoint, "commits_itself", False):
                return await run_streamed(request, handler, database, caller, key)
            digest = digest_of(request, await request.body())
            async with database.sessionmaker() as session:
                request.state.db_session = session
                keyed = IdempotentRequest(session, caller, key, digest)
                replayed = await keyed.replay()
                if replayed is not None:
                    await session.rollback()
                    return replayed
                return await finish(request, await handler(request), keyed)

        return commit_then_respond


async def run_streamed(
    request: Request,
    handler: Callable[[Request], Awaitable[Response]],
    database: Database,
    caller: str,
    key: str,
) -> Response:
    keyed = StreamedIdempotentRequest(database, caller, key, request)
    replayed = await keyed.begin()
    if replayed is not None:
        return replayed
    try:
        response = await finish(request, await handler(request))
    except BaseException:
        await keyed.end(None)
        raise
    await keyed.end(response)
    return response


def commits_itself(endpoint: Callable) -> Callable:
    """Marks an endpoint that ends its transactions itself (an upload, not to hold a database
    connection while a body streams in); an Idempotency-Key of it is kept apart from them."""
    endpoint.commits_itself = True
    return endpoint


async def finish(
    request: Request, response: Response, keyed: IdempotentRequest | None = None
) -> Response:
    session = getattr(request.state, "db_session", None)
    if session is not None and session.in_transaction():
        if response.status_code < 400:
            # A streamed body is not kept: a retry runs the request again.
            if keyed is not None and hasattr(response, "body"):
                await keyed.remember(response)
            await session.commit()
            await run_after_commit(session)
        else:
            await session.rollback()
    return response


def service_router(**kwargs) -> APIRouter:
    return APIRouter(route_class=TransactionalRoute, **kwargs)
