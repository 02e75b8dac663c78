"""A route class that commits the request's transaction before the response is sent.

Services never commit: the use case runs in the request's session, and this route commits it
once the endpoint returned a success, so a failed commit is still reported to the client. (Code
after `yield` in a dependency runs after the response has gone, too late to report a failure.)
"""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from taskhub_common.db import run_after_commit


class TransactionalRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def commit_then_respond(request: Request) -> Response:
            response = await handler(request)
            session = getattr(request.state, "db_session", None)
            if session is not None and session.in_transaction():
                if response.status_code < 400:
                    await session.commit()
                    await run_after_commit(session)
                else:
                    await session.rollback()
            return response

        return commit_then_respond


def service_router(**kwargs) -> APIRouter:
    return APIRouter(route_class=TransactionalRoute, **kwargs)
