from pathlib import Path

from taskhub_common.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    SERVICE_NAME: str = "notifier"
    # As many connections as events handled at once (the bus's prefetch of 20) and a few for
    # the API and the loops: with fewer, a burst opens and closes overflow connections, each
    # with its own type introspection, and handles a fraction of the events per second.
    DB_POOL_SIZE: int = 25

    # SMTP, as the original's variables. No SMTP_HOST: every message is written to
    # DATA_DIR/mail as an .eml file instead (the embedded mode).
    SMTP_HOST: str = ""
    SMTP_PORT: int = 587
    SMTP_USER: str = ""
    SMTP_PASSWORD: str = ""
    EMAIL_FROM: str = "noreply@taskhub.com"
    SMTP_TIMEOUT_SECONDS: float = 30.0
    # Where the SPA runs: the links in emails point there.
    APP_URL: str = "http://localhost:5173"

    # How often the mail worker looks for messages to send (a new one wakes it at once).
    MAIL_POLL_SECONDS: float = 5.0
    # Attempts to send one message before it is given up (kept, marked failed).
    MAIL_MAX_ATTEMPTS: int = 10
    # Back-off after a failed attempt: this many seconds, doubled per attempt, at most an hour.
    MAIL_RETRY_SECONDS: float = 30.0

    # The overdue clock: how often the tasks service's sweep is called (one replica per interval).
    OVERDUE_SCAN_INTERVAL: float = 300.0
    # How often due reminders are looked for: a reminder fires at most this late.
    REMINDER_INTERVAL: float = 30.0

    @property
    def mail_dir(self) -> Path:
        """The folder of the embedded mode's messages (no SMTP_HOST)."""
        return self.DATA_DIR / "mail"
