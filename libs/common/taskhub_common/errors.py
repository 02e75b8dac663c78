"""The error model: expected errors are exceptions with their status, rendered by one handler.

Every error body is FastAPI's `{"detail": ...}` (the SPA reads `detail`) plus `code` and
`request_id`.
"""

import logging
import socket
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from taskhub_common.logs import request_id_var

logger = logging.getLogger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, detail: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"

    def __init__(self, detail: str = "Could not validate credentials") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotPermitted(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Unprocessable(AppError):
    status_code = 422
    code = "invalid"


def invalid_field(field: str, message: str, location: str = "body") -> Unprocessable:
    """A 422 shaped like FastAPI's own validation errors, for rules checked past the schema."""
    return Unprocessable([{"type": "value_error", "loc": [location, field], "msg": message}])


# How long a client is asked to wait before it retries, when something this service needs
# (the database, another service, the storage) cannot be reached.
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(AppError):
    status_code = 503
    code = "unavailable"

    def __init__(self, detail: object = "The service is temporarily unavailable") -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


# SQLSTATEs of a database that cannot serve now, through no fault of the request: class 08
# (connection exception), class 57P (shutting down, starting up) and 53300 (too many
# connections).
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error means the database could not be reached or lost the connection."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # no pooled connection in time
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
            return True
        return _sqlstate(exc).startswith(_UNAVAILABLE_SQLSTATES)
    # Raised unwrapped by asyncpg while connecting: refused, reset, timed out, unknown host.
    return isinstance(exc, ConnectionError | TimeoutError | socket.gaierror)


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "pgcode", "") or getattr(exc.orig, "sqlstate", "") or "")


_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    431: "headers_too_large",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


class ErrorBody(BaseModel):
    """Every error's body, as the OpenAPI documents it."""

    detail: str | list[dict[str, Any]]
    code: str
    request_id: str | None


ERROR_DESCRIPTIONS = {
    400: "The request body could not be read (not the encoding its Content-Type names)",
    401: "No valid access token",
    403: "The caller may not do this",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the current state",
    413: "The request body is too large",
    422: "The input is not valid",
    429: "Rate limit exceeded (Retry-After says when to retry)",
    431: "Too many or too large request headers",
    503: "A server this route needs is unavailable (Retry-After says when to retry)",
    504: "A service did not answer in time",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route for the errors it raises itself (the others are documented for
    every route by the gateway's merged OpenAPI)."""
    return {
        status: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def error_response(
    status_code: int,
    detail: object,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body = {
        "detail": jsonable_encoder(detail),
        "code": code or _CODES.get(status_code, "error"),
        "request_id": request_id or request_id_var.get(),
    }
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc.status_code, exc.detail, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, exc.detail, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {key: err[key] for key in ("type", "loc", "msg") if key in err} for err in exc.errors()
        ]
        return error_response(422, errors)

    @app.exception_handler(DBAPIError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    @app.exception_handler(OSError)
    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        # SQLSTATE class 22 is "data exception": a value PostgreSQL refuses (a NUL character,
        # a date out of range). Bad input, not a bug; the transaction is rolled back.
        if isinstance(exc, DBAPIError) and _sqlstate(exc).startswith("22"):
            return error_response(422, "A value is not acceptable to the database", "invalid")
        if database_unavailable(exc):
            logger.warning("the database is unavailable: %r", exc)
            unavailable = ServiceUnavailable("The database is unavailable")
            return error_response(503, unavailable.detail, headers=unavailable.headers)
        return await unexpected_error(request, exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        # This handler runs outside the request-context middleware: take the id it left.
        request_id = request.scope.get("request_id")
        return error_response(
            500,
            "Internal server error",
            "internal",
            headers={"X-Request-ID": request_id} if request_id else None,
            request_id=request_id,
        )


def allowed_methods(request: Request) -> list[str]:
    """Every method the app takes on the request's path. A fixed path is its own resource
    (as in OpenAPI): `/api/tasks/bulk` takes POST, whatever `/api/tasks/{task_id}` takes."""
    path = request.scope["path"]
    matching = [
        route
        for route in iter_route_contexts(request.app.routes)
        if route.path and compile_path(route.path)[0].match(path)
    ]
    fixed = [route for route in matching if "{" not in route.path]
    return sorted(
        {
            method
            for route in fixed or matching
            for method in getattr(route.original_route, "methods", None) or ()
        }
    )
