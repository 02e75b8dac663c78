"""Settings shared by every service.

Each service's settings class extends this base; the README's table says which service reads
which variable. Defaults are the safe ones of the embedded mode: no server named means "run it
in-process".
"""

import re
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "change-me"  # noqa: S105 - the original's default, refused in production


def split_csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Which service this process is; each service's settings class sets its own default.
    SERVICE_NAME: str = "service"
    APP_NAME: str = "TaskHub"
    APP_VERSION: str = "1.0.0"
    DEBUG: bool = False
    ENVIRONMENT: Literal["development", "test", "production"] = "development"
    LOG_LEVEL: str = "INFO"
    # JSON lines, or one readable line per record; auto: text on a terminal, else JSON.
    LOG_FORMAT: Literal["auto", "json", "text"] = "auto"
    SECRET_KEY: str = DEFAULT_SECRET_KEY
    # Folder for everything the embedded mode keeps: database, files, mail.
    DATA_DIR: Path = Path("var")

    # PostgreSQL. No DB_HOST and no DATABASE_URL: the embedded server under DATA_DIR is used.
    DATABASE_URL: str | None = None
    DB_HOST: str | None = None
    DB_PORT: int = 5432
    DB_NAME: str = "taskhub"
    DB_USER: str = "postgres"
    DB_PASSWORD: str = ""
    # The schema this service owns; empty means the service name.
    DB_SCHEMA: str = ""
    DB_POOL_SIZE: int = 10
    # Connections opened beyond the pool during a burst (closed when returned).
    DB_MAX_OVERFLOW: int = 10

    # RabbitMQ. Unset: the in-process event bus.
    RABBITMQ_URL: str | None = None
    EVENT_MAX_ATTEMPTS: int = 5
    # Delay before each retry of a failed event handler, in milliseconds.
    EVENT_RETRY_DELAYS_MS: str = "1000,5000,30000,120000"
    OUTBOX_POLL_SECONDS: float = 1.0

    # Redis. Unset REDIS_HOST: in-process caches and limits.
    REDIS_HOST: str | None = None
    REDIS_PORT: int = 6379
    REDIS_DB: int = 0
    REDIS_USER: str = ""
    REDIS_PASSWORD: str = ""

    # Where each service of taskhub_common.registry listens (in the embedded mode these URLs
    # name the in-process apps). Identity's JWKS verifies access tokens; tasks answers the
    # others' "does this task exist" over its internal API; the gateway routes to all.
    IDENTITY_URL: str = "http://127.0.0.1:8001"
    TASKS_URL: str = "http://127.0.0.1:8002"
    COMMENTS_URL: str = "http://127.0.0.1:8003"
    FILES_URL: str = "http://127.0.0.1:8004"
    ANALYTICS_URL: str = "http://127.0.0.1:8005"
    NOTIFIER_URL: str = "http://127.0.0.1:8006"
    # How long a request waits for the tasks service to say whether a task exists.
    TASKS_TIMEOUT_SECONDS: float = 5.0
    JWT_ISSUER: str = "taskhub-identity"
    JWT_AUDIENCE: str = "taskhub"
    JWKS_CACHE_SECONDS: int = 300

    # What one request may make a process read (taskhub_common.limits): a body larger than
    # MAX_JSON_BODY is refused with 413 (uploads have their own limit), more headers than
    # MAX_HEADER_COUNT or more than MAX_HEADER_BYTES of them with 431.
    MAX_JSON_BODY: int = 1024 * 1024
    MAX_HEADER_COUNT: int = 100
    MAX_HEADER_BYTES: int = 32 * 1024

    @field_validator("DB_HOST", "RABBITMQ_URL", "REDIS_HOST", "DATABASE_URL", mode="before")
    @classmethod
    def blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def refuse_default_secret_in_production(self) -> "ServiceSettings":
        if self.ENVIRONMENT == "production" and self.SECRET_KEY == DEFAULT_SECRET_KEY:
            raise ValueError("SECRET_KEY must be set to a real secret when ENVIRONMENT=production")
        return self

    def max_body_bytes(self, method: str, path: str) -> int:
        """The largest request body accepted on a route."""
        return self.MAX_JSON_BODY

    @property
    def schema_name(self) -> str:
        return self.DB_SCHEMA or self.SERVICE_NAME

    @property
    def retry_delays_ms(self) -> list[int]:
        return [int(item) for item in split_csv(self.EVENT_RETRY_DELAYS_MS)]

    @property
    def redis_url(self) -> str | None:
        if not self.REDIS_HOST:
            return None
        credentials = ""
        if self.REDIS_USER or self.REDIS_PASSWORD:
            credentials = f"{self.REDIS_USER}:{self.REDIS_PASSWORD}@"
        return f"redis://{credentials}{self.REDIS_HOST}:{self.REDIS_PORT}/{self.REDIS_DB}"


# Where files are uploaded: POST /api/tasks/{task_id}/files, on the gateway and the files service.
UPLOAD_ROUTE = re.compile(r"/api/tasks/[^/]+/files/?")
# Room for a multipart part's boundary and headers, on top of its bytes.
PART_OVERHEAD = 16 * 1024


def upload_body_limit(max_files: int, max_file_size: int) -> int:
    """The largest multipart body of one upload: every file at its largest."""
    return max_files * (max_file_size + PART_OVERHEAD) + PART_OVERHEAD


class UploadSettings(ServiceSettings):
    """The upload limits, read by the files service and by the gateway in front of it, so the
    upload route's body limit is the same at both."""

    # Per file, enforced while the upload streams in.
    MAX_FILE_SIZE: int = 10 * 1024 * 1024
    # Files in one upload request.
    MAX_FILES_PER_UPLOAD: int = 20

    def max_body_bytes(self, method: str, path: str) -> int:
        if method == "POST" and UPLOAD_ROUTE.fullmatch(path):
            return upload_body_limit(self.MAX_FILES_PER_UPLOAD, self.MAX_FILE_SIZE)
        return super().max_body_bytes(method, path)
