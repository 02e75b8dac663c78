from taskhub_common.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    SERVICE_NAME: str = "analytics"
    # Answers are cached this long, and dropped at once by any event that changes the model.
    CACHE_TTL_SECONDS: int = 300
    # Tasks per page of the backfill from the tasks service's export.
    BACKFILL_PAGE_SIZE: int = 1000
