"""The identity service: users, login, tokens, JWKS."""

from pathlib import Path

from fastapi import FastAPI

from identity.cache import ProfileCache
from identity.keys import KeyRing
from identity.router import router, well_known_router
from identity.settings import IdentitySettings
from taskhub_common.app import ServiceSpec, create_service_app


def create_app(settings: IdentitySettings | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    key_ring = KeyRing(settings)

    async def load_keys(app: FastAPI) -> None:
        async with app.state.database.sessionmaker.begin() as session:
            await key_ring.load(session)
        app.state.key_ring = key_ring
        app.state.profiles = ProfileCache(settings)

    async def close_profiles(app: FastAPI) -> None:
        await app.state.profiles.store.close()

    return create_service_app(
        ServiceSpec(
            settings=settings,
            routers=[router, well_known_router],
            description="Users, registration, login, tokens and the JWKS of TaskHub.",
            migrations_dir=Path(__file__).parent / "migrations",
            key_source=lambda app: key_ring,
            on_startup=[load_keys],
            on_shutdown=[close_profiles],
        )
    )
