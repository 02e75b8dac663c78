"""The notifier's background loops: the mail worker, the reminder clock and the overdue clock.
Each is safe with several replicas, and catches and logs its own errors per round."""

import asyncio
import logging
import uuid
from datetime import timedelta

from fastapi import FastAPI

from notifier import notices
from notifier.delivery import Dispatcher
from notifier.mailer import Transport, build_message, make_transport
from notifier.repository import (
    ClockRepository,
    MailRepository,
    OutgoingMail,
    ReminderRepository,
    TaskStateRepository,
)
from notifier.settings import NotifierSettings
from taskhub_common import deleted_tasks
from taskhub_common.db import Database, run_after_commit
from taskhub_common.tasks_client import TasksClient
from taskhub_common.tracing import background, link_to

logger = logging.getLogger(__name__)

OVERDUE_SWEEP = "overdue-sweep"
MAX_RETRY_SECONDS = 3600.0


class MailWorker:
    """Sends the mail outbox. A batch is claimed with FOR UPDATE SKIP LOCKED and stays locked
    while it is sent, so two workers never send one message; a message is marked sent only
    after the SMTP server accepted it, and a failure is retried later with back-off."""

    def __init__(
        self,
        database: Database,
        transport: Transport,
        settings: NotifierSettings,
        wakeup: asyncio.Event,
        batch_size: int = 50,
    ) -> None:
        self.database = database
        self.transport = transport
        self.settings = settings
        self.wakeup = wakeup
        self.batch_size = batch_size

    async def run(self) -> None:
        while True:
            try:
                handled = await self.send_batch()
            except Exception:
                logger.exception("mail worker round failed")
                handled = 0
            if handled < self.batch_size:
                try:
                    async with asyncio.timeout(self.settings.MAIL_POLL_SECONDS):
                        await self.wakeup.wait()
                except TimeoutError:
                    pass
                self.wakeup.clear()

    async def send_batch(self) -> int:
        """Claim due messages, send them, record the outcome; returns how many were claimed."""
        async with self.database.sessionmaker() as session, session.begin():
            outbox = MailRepository(session)
            claimed = await outbox.claim(self.batch_size)
            if not claimed:
                return 0
            with background("mail batch"):
                link_to(mail.traceparent for mail in claimed)
                await self._send(outbox, claimed)
        return len(claimed)

    async def _send(self, outbox: MailRepository, claimed: list[OutgoingMail]) -> None:
        """Send what was claimed and record each outcome, in the claim's transaction."""
        ready = [mail for mail in claimed if mail.address]
        for mail in claimed:
            if not mail.address:
                # The user.* event with the address is still on its way.
                await self._failed(outbox, mail.id, mail.attempts, "address not known yet")
        if not ready:
            return
        try:
            results = await self.transport.send(
                [build_message(mail, self.settings) for mail in ready]
            )
        except Exception as exc:
            logger.warning("mail server unavailable: %r", exc)
            for mail in ready:
                await self._failed(outbox, mail.id, mail.attempts, repr(exc))
            return
        await outbox.mark_sent(
            [mail.id for mail, error in zip(ready, results, strict=True) if error is None]
        )
        for mail, error in zip(ready, results, strict=True):
            if error is not None:
                await self._failed(outbox, mail.id, mail.attempts, repr(error))

    async def _failed(
        self, outbox: MailRepository, mail_id: uuid.UUID, attempts: int, error: str
    ) -> None:
        attempts += 1
        if attempts >= self.settings.MAIL_MAX_ATTEMPTS:
            logger.error("mail %s given up after %d attempts: %s", mail_id, attempts, error)
            await outbox.mark_attempt_failed(mail_id, error, retry_in=None)
            return
        delay = min(MAX_RETRY_SECONDS, self.settings.MAIL_RETRY_SECONDS * 2 ** (attempts - 1))
        await outbox.mark_attempt_failed(mail_id, error, retry_in=timedelta(seconds=delay))


async def fire_due_reminders(database: Database, dispatcher: Dispatcher, limit: int = 100) -> int:
    """Deliver the reminders whose time has come, once each (claimed with SKIP LOCKED and
    marked fired in the notice's transaction); those of a deleted or completed task are
    dropped. Returns how many were claimed."""
    async with database.sessionmaker() as session:
        async with session.begin():
            reminders = ReminderRepository(session)
            due = await reminders.claim_due(limit)
            states = TaskStateRepository(session)
            fired, dropped = [], []
            for reminder in due:
                state = await states.get(reminder.task_id)
                closed = state is not None and (state.is_deleted or state.status == "completed")
                if closed or await deleted_tasks.is_task_deleted(session, reminder.task_id):
                    dropped.append(reminder.id)
                    continue
                notice = notices.task_reminder(
                    reminder.id,
                    reminder.task_id,
                    state.title if state else None,
                    state.due_date if state else None,
                )
                await dispatcher.deliver(session, notice, [reminder.user_id])
                fired.append(reminder.id)
            await reminders.mark_fired(fired)
            await reminders.delete_many(dropped)
        await run_after_commit(session)
    return len(due)


async def tick_overdue_clock(database: Database, tasks: TasksClient, interval: float) -> bool:
    """Call the sweep if no replica did within this interval; True if this one did."""
    async with database.sessionmaker() as session, session.begin():
        # A little slack: replicas whose ticks drift must not skip a whole interval.
        my_turn = await ClockRepository(session).take_turn(
            OVERDUE_SWEEP, timedelta(seconds=interval * 0.9)
        )
    if my_turn:
        marked = await tasks.sweep_overdue()
        logger.info("overdue sweep: %d tasks marked overdue", marked)
    return my_turn


async def _every(seconds: float, what: str, round_) -> None:
    """Run `round_` every `seconds`, each round a trace of its own."""
    while True:
        with background(what):
            try:
                await round_()
            except Exception:
                logger.exception("%s failed", what)
        await asyncio.sleep(seconds)


async def mail_worker(app: FastAPI) -> None:
    state = app.state
    settings: NotifierSettings = state.settings
    worker = MailWorker(state.database, make_transport(settings), settings, state.mail_queued)
    await worker.run()


async def reminder_clock(app: FastAPI) -> None:
    state = app.state

    async def round_() -> None:
        while await fire_due_reminders(state.database, state.dispatcher) > 0:
            pass

    await _every(state.settings.REMINDER_INTERVAL, "reminder round", round_)


async def overdue_clock(app: FastAPI) -> None:
    state = app.state
    interval = state.settings.OVERDUE_SCAN_INTERVAL

    async def round_() -> None:
        await tick_overdue_clock(state.database, state.tasks_client, interval)

    await _every(interval, "overdue sweep", round_)
