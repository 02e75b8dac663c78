"""Emails: built with the standard library's EmailMessage, sent over SMTP with aiosmtplib, or
written as .eml files in the embedded mode (no SMTP_HOST)."""

import asyncio
import html
import logging
import os
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

import aiosmtplib

from notifier.repository import OutgoingMail
from notifier.settings import NotifierSettings

logger = logging.getLogger(__name__)


def build_message(mail: OutgoingMail, settings: NotifierSettings) -> EmailMessage:
    """Plain text and HTML, a link to the task, and List-Unsubscribe pointing at the
    notification preferences. The Message-ID is the outbox row's, so a receiver can drop the
    copy that a crash between SMTP's acceptance and our commit would send again."""
    app_url = settings.APP_URL.rstrip("/")
    preferences_url = f"{app_url}/settings/notifications"
    task_url = f"{app_url}/tasks/{mail.task_id}" if mail.task_id else app_url
    domain = settings.EMAIL_FROM.rpartition("@")[2] or "taskhub"
    message = EmailMessage()
    message["From"] = settings.EMAIL_FROM
    message["To"] = mail.address
    message["Subject"] = f"[TaskHub] {mail.subject}"
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{mail.id}@{domain}>"
    message["List-Unsubscribe"] = f"<{preferences_url}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-TaskHub-Notification-Type"] = mail.type
    message.set_content(
        f"{mail.body}\n\nOpen the task: {task_url}\n\n"
        f"--\nYou get this email because of your TaskHub notification preferences.\n"
        f"Change them: {preferences_url}\n"
    )
    body, task_link, preferences_link = (
        html.escape(mail.body),
        html.escape(task_url, quote=True),
        html.escape(preferences_url, quote=True),
    )
    message.add_alternative(
        f'<!doctype html><html><body><p>{body}</p><p><a href="{task_link}">Open the task</a></p>'
        f'<hr><p style="font-size:small">You get this email because of your TaskHub notification '
        f'preferences. <a href="{preferences_link}">Change them</a>.</p></body></html>\n',
        subtype="html",
    )
    return message


class Transport(Protocol):
    async def send(self, messages: list[EmailMessage]) -> list[Exception | None]:
        """Send each message: None where it was accepted, the error where it was refused.
        Raises when nothing could be sent (the server is unreachable)."""
        ...


class SmtpTransport:
    """One connection per batch. STARTTLS when the server offers it (aiosmtplib's default),
    implicit TLS on port 465, login when SMTP_USER is set."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def send(self, messages: list[EmailMessage]) -> list[Exception | None]:
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USER or None,
            password=settings.SMTP_PASSWORD or None,
            use_tls=settings.SMTP_PORT == 465,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )
        results: list[Exception | None] = []
        async with client:
            for message in messages:
                try:
                    await client.send_message(message)
                    results.append(None)
                except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                    results.append(exc)
        return results


class FolderTransport:
    """The embedded mode's mail: one .eml file per message under DATA_DIR/mail, and a log line."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, messages: list[EmailMessage]) -> list[Exception | None]:
        await asyncio.to_thread(self._write_all, messages)
        return [None] * len(messages)

    def _write_all(self, messages: list[EmailMessage]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for message in messages:
            name = message["Message-ID"].strip("<>").partition("@")[0]
            path = self.folder / f"{name}.eml"
            # Written whole or not at all: a reader never sees half a message.
            partial = path.with_suffix(".eml.part")
            partial.write_bytes(bytes(message))
            os.replace(partial, path)
            logger.info("mail written to %s: %s", path, message["Subject"])


def make_transport(settings: NotifierSettings) -> Transport:
    if settings.SMTP_HOST:
        return SmtpTransport(settings)
    return FolderTransport(settings.mail_dir)
