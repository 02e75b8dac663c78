from analytics.settings import AnalyticsSettings
from taskhub_common.cache import GenerationalCache, make_store


def open_cache(settings: AnalyticsSettings) -> GenerationalCache:
    # Namespaced by database too: stacks sharing one Redis never read each other's entries.
    return GenerationalCache(
        make_store(settings.redis_url),
        f"{settings.DB_NAME}:{settings.schema_name}",
        settings.CACHE_TTL_SECONDS,
    )
