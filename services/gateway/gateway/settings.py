from taskhub_common.settings import UploadSettings, split_csv


class GatewaySettings(UploadSettings):
    SERVICE_NAME: str = "gateway"
    CORS_ORIGINS: str = "http://localhost:5173"
    RATE_LIMIT_DEFAULT: str = "100/minute"
    # Login and register, per client IP.
    RATE_LIMIT_AUTH: str = "10/minute"
    # Proxies whose X-Forwarded-For is believed (comma-separated networks); none by default.
    TRUSTED_PROXIES: str = ""
    UPSTREAM_CONNECT_TIMEOUT: float = 3.0
    UPSTREAM_TIMEOUT: float = 30.0
    # Request bodies up to this size are buffered; larger ones (uploads) are streamed through.
    BUFFER_BODY_BYTES: int = 1024 * 1024

    @property
    def cors_origins(self) -> list[str]:
        return split_csv(self.CORS_ORIGINS)

    @property
    def trusted_proxies(self) -> list[str]:
        return split_csv(self.TRUSTED_PROXIES)
