"""HTTP endpoints of identity: thin, the rules live in service.py."""

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from identity.schemas import (
    AuthResponse,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RegisterRequest,
    UpdateMeRequest,
    UserOut,
)
from identity.service import IdentityService, public_user
from taskhub_common.auth import CurrentPrincipal
from taskhub_common.db import get_session
from taskhub_common.errors import error_responses
from taskhub_common.routing import service_router

router = service_router(prefix="/api/auth", tags=["auth"])
well_known_router = service_router(tags=["auth"])


# Async: FastAPI runs a plain function dependency in a worker thread, a thread hop per request.
async def get_service(
    request: Request, session: Annotated[AsyncSession, Depends(get_session)]
) -> IdentityService:
    state = request.app.state
    return IdentityService(session, state.key_ring, state.settings, state.deny_list, state.profiles)


Service = Annotated[IdentityService, Depends(get_service)]

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "description": "the email"},
                        "password": {"type": "string"},
                    },
                }
            },
        },
    }
}


async def read_login(request: Request) -> LoginRequest:
    """JSON `{email, password}`, or the OAuth2 password form (so Swagger's Authorize works)."""
    try:
        if request.headers.get("content-type", "").startswith(FORM_TYPES):
            form = await request.form()
            return LoginRequest(
                email=form.get("username") or "", password=form.get("password") or ""
            )
        return LoginRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


@router.post("/register", status_code=201, responses=error_responses(409))
async def register(body: RegisterRequest, service: Service) -> AuthResponse:
    return await service.register(body)


@router.post("/login", openapi_extra=LOGIN_BODY, responses=error_responses(401))
async def login(request: Request, service: Service) -> AuthResponse:
    body = await read_login(request)
    return await service.login(body.email, body.password)


@router.post("/refresh", responses=error_responses(401, 403))
async def refresh(body: RefreshRequest, service: Service) -> AuthResponse:
    return await service.refresh(body.refresh_token)


@router.post("/logout", status_code=204)
async def logout(principal: CurrentPrincipal, service: Service, body: LogoutRequest | None = None):
    await service.logout(principal.user_id, body.refresh_token if body else None)
    return Response(status_code=204)


@router.get("/me", response_model=UserOut)
async def me(principal: CurrentPrincipal, service: Service) -> Response:
    return Response(await service.own_profile(principal.user_id), media_type="application/json")


@router.put("/me")
async def update_me(
    principal: CurrentPrincipal, body: UpdateMeRequest, service: Service
) -> UserOut:
    return public_user(await service.update_me(principal.user_id, body), principal.user_id)


@router.get("/users")
async def list_users(principal: CurrentPrincipal, service: Service) -> list[UserOut]:
    await service.get_user(principal.user_id)
    return [public_user(user, principal.user_id) for user in await service.list_users()]


@well_known_router.get("/.well-known/jwks.json")
async def jwks(request: Request) -> dict:
    return request.app.state.key_ring.jwks()
