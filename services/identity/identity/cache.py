import uuid

from identity.settings import IdentitySettings
from taskhub_common.cache import CacheStore, GenerationalCache, make_store

ME = "me"


class ProfileCache:
    """Each user's own `GET /me` answer, in a namespace per user that a change of that user
    drops (decision 0049). Namespaced by database too: stacks sharing one Redis never read
    each other's entries."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.store: CacheStore = make_store(settings.redis_url)
        self.prefix = f"{settings.DB_NAME}:{settings.schema_name}:profile"
        self.ttl = settings.PROFILE_CACHE_SECONDS

    def of(self, user_id: uuid.UUID) -> GenerationalCache:
        return GenerationalCache(self.store, f"{self.prefix}:{user_id}", self.ttl)
