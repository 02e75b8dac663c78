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
    # How long the composed task view keeps a task's comments and files (decision 0044); a
    # write to them makes the copy stale at once.
    TASK_PARTS_CACHE_SECONDS: int = 300
    # Live updates over WebSocket (docs/live-updates.md).
    WS_MAX_PER_USER: int = 10
    # WebSocket handshakes per client IP.
    WS_HANDSHAKE_RATE: str = "60/minute"
    # Largest message a client may send, in bytes.
    WS_MAX_MESSAGE_BYTES: int = 4096
    # Messages waiting for one socket; a client that lets more pile up is closed (1013).
    WS_SEND_QUEUE: int = 256
    # Event messages go to a socket at most once per this many ms, those of the meantime in
    # one write (0: as soon as numbered); the first after a quiet spell goes at once.
    WS_FLUSH_MS: int = 10
    # How long before its token expires a socket is told so (token_expiring).
    WS_EXPIRY_NOTICE_SECONDS: int = 60
    # The live log to resume from (every user's messages, each stored once): at most this many
    # messages, for at most this long.
    WS_HISTORY_MESSAGES: int = 10_000
    WS_HISTORY_SECONDS: int = 24 * 3600
    WS_TICKET_SECONDS: int = 30

    @property
    def cors_origins(self) -> list[str]:
        return split_csv(self.CORS_ORIGINS)

    @property
    def trusted_proxies(self) -> list[str]:
        return split_csv(self.TRUSTED_PROXIES)
