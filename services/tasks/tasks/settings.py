from taskhub_common.settings import ServiceSettings


class TasksSettings(ServiceSettings):
    SERVICE_NAME: str = "tasks"
    # Lists and single tasks are cached this long (the original's 5 minutes).
    CACHE_TTL_SECONDS: int = 300
