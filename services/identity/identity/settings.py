from typing import Literal

from taskhub_common.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    SERVICE_NAME: str = "identity"
    # Asymmetric only: other services verify tokens with the public key alone.
    ALGORITHM: Literal["EdDSA", "RS256"] = "EdDSA"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = 30
    REFRESH_TOKEN_EXPIRE_DAYS: int = 30
    # Two tabs refreshing with the same token this close together both get the new pair.
    REFRESH_GRACE_SECONDS: int = 10
    # How long a user's own profile (GET /me) may be served from the cache. A change through
    # the API drops it at once; a change made in the database alone shows after this long.
    PROFILE_CACHE_SECONDS: int = 60
