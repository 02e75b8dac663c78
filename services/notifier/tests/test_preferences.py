"""Preferences: channels per type, time zone and quiet hours, and what they do to delivery."""

import asyncio
import uuid
import zoneinfo
from datetime import UTC, datetime, time, timedelta

import httpx
import pytest
from fastapi import FastAPI

from notifier.delivery import quiet_until
from notifier.repository import DeliverySettings

from .conftest import (
    MailSink,
    assign,
    create_task,
    eventually,
    execute,
    notices_of,
    rows,
    wait_handled,
)

URL = "/api/notifications/preferences"
TYPES = {"task_assigned", "comment_added", "task_overdue", "task_reminder"}


async def preferences(client: httpx.AsyncClient, user) -> dict:
    response = await client.get(URL, headers=user[1])
    assert response.status_code == 200, response.text
    return response.json()


async def update(client: httpx.AsyncClient, user, body: dict) -> dict:
    response = await client.put(URL, headers=user[1], json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_defaults_are_everything_on_in_utc(client: httpx.AsyncClient, alice) -> None:
    assert await preferences(client, alice) == {
        "types": {type_: {"in_app": True, "email": True} for type_ in TYPES},
        "timezone": "UTC",
        "quiet_hours": None,
    }


async def test_an_update_changes_what_it_names_only(client: httpx.AsyncClient, alice, bob) -> None:
    body = await update(client, alice, {"types": {"task_assigned": {"email": False}}})
    assert body["types"]["task_assigned"] == {"in_app": True, "email": False}
    assert body["types"]["comment_added"] == {"in_app": True, "email": True}
    body = await update(
        client,
        alice,
        {
            "types": {"task_assigned": {"in_app": False}},
            "timezone": "Europe/Paris",
            "quiet_hours": {"start": "22:00", "end": "07:30"},
        },
    )
    assert body["types"]["task_assigned"] == {"in_app": False, "email": False}
    assert body["timezone"] == "Europe/Paris"
    assert body["quiet_hours"] == {"start": "22:00:00", "end": "07:30:00"}
    assert await preferences(client, alice) == body
    # The time zone alone keeps the quiet hours; an explicit null clears them.
    body = await update(client, alice, {"timezone": "America/New_York"})
    assert body["quiet_hours"] == {"start": "22:00:00", "end": "07:30:00"}
    body = await update(client, alice, {"quiet_hours": None})
    assert (body["timezone"], body["quiet_hours"]) == ("America/New_York", None)
    assert (await preferences(client, bob))["types"]["task_assigned"]["email"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"timezone": "Mars/Olympus_Mons"},
        {"timezone": "../../etc/passwd"},
        {"types": {"task_exploded": {"email": False}}},
        {"types": {"task_assigned": {"sms": True}}},
        {"quiet_hours": {"start": "22:00", "end": "22:00"}},
        {"quiet_hours": {"start": "25:00", "end": "07:00"}},
        {"quiet_hours": {"start": "22:00"}},
        {"colour": "blue"},
        # A good part and a bad part: nothing is written.
        {"types": {"task_assigned": {"in_app": False}}, "timezone": "Nowhere/Never"},
    ],
)
async def test_bad_preferences_are_422_and_write_nothing(
    client: httpx.AsyncClient, alice, body: dict
) -> None:
    before = await preferences(client, alice)
    response = await client.put(URL, headers=alice[1], json=body)
    assert response.status_code == 422, response.text
    assert await preferences(client, alice) == before


async def test_email_off_for_a_type_sends_no_email(
    app: FastAPI, tasks_app: FastAPI, client, tasks, alice, bob
) -> None:
    await update(client, bob, {"types": {"task_assigned": {"email": False}}})
    task = await create_task(tasks, alice[1])
    await assign(tasks, alice[1], task, bob)
    await wait_handled(app, tasks_app, task, "task.assigned")
    assert [n["type"] for n in await notices_of(app, bob)] == ["task_assigned"]
    assert await mails_of(app, bob) == []


async def test_in_app_off_for_a_type_still_emails(
    app: FastAPI, tasks_app: FastAPI, client, tasks, mail_sink: MailSink, alice, bob
) -> None:
    await update(client, bob, {"types": {"task_assigned": {"in_app": False}}})
    task = await create_task(tasks, alice[1])
    await assign(tasks, alice[1], task, bob)
    await wait_handled(app, tasks_app, task, "task.assigned")
    assert await notices_of(app, bob) == []

    async def arrived() -> bool:
        return len(mail_sink.to(bob[0]["email"])) == 1

    await eventually(arrived, "the email arrives")
    # Another type is untouched.
    await update(client, bob, {"types": {"comment_added": {"in_app": True}}})
    assert (await preferences(client, bob))["types"]["task_assigned"]["in_app"] is False


async def mails_of(app: FastAPI, user) -> list[dict]:
    return await rows(
        app, "SELECT * FROM mail_outbox WHERE user_id = :u", u=uuid.UUID(user[0]["id"])
    )


async def test_quiet_hours_hold_email_back_until_they_end(
    app: FastAPI, tasks_app: FastAPI, client, tasks, mail_sink: MailSink, alice, bob
) -> None:
    zone = zoneinfo.ZoneInfo("Asia/Tokyo")
    local = datetime.now(zone)
    start = (local - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    await update(
        client,
        bob,
        {
            "timezone": "Asia/Tokyo",
            "quiet_hours": {"start": start.isoformat(), "end": end.isoformat()},
        },
    )
    task = await create_task(tasks, alice[1])
    await assign(tasks, alice[1], task, bob)
    await wait_handled(app, tasks_app, task, "task.assigned")
    assert len(await notices_of(app, bob)) == 1, "the in-app notice is not held back"
    (mail,) = await mails_of(app, bob)
    expected_end = datetime.combine(local.date(), end, tzinfo=zone)
    if expected_end <= local:
        expected_end += timedelta(days=1)
    assert mail["send_after"] == expected_end
    assert mail["sent_at"] is None
    app.state.mail_queued.set()
    await asyncio.sleep(0.6)  # the worker has looked (it polls every 0.2 s in these tests)
    assert await _still_waiting(app, mail["id"])
    assert mail_sink.to(bob[0]["email"]) == []
    # The quiet hours end (the clock moved on): the message goes.
    await execute(app, "UPDATE mail_outbox SET send_after = now() WHERE id = :i", i=mail["id"])
    app.state.mail_queued.set()

    async def arrived() -> bool:
        return len(mail_sink.to(bob[0]["email"])) == 1

    await eventually(arrived, "the held email arrives")


async def _still_waiting(app: FastAPI, mail_id) -> bool:
    (row,) = await rows(app, "SELECT sent_at, attempts FROM mail_outbox WHERE id = :i", i=mail_id)
    return row["sent_at"] is None and row["attempts"] == 0


def at(text: str, zone: str = "Europe/Paris") -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "start", "end", "expected"),
    [
        # Outside the window: no wait.
        ("2026-06-01T12:00", time(22), time(7), None),
        # Inside a window that spans midnight, before and after it.
        ("2026-06-01T23:30", time(22), time(7), "2026-06-02T07:00"),
        ("2026-06-02T03:00", time(22), time(7), "2026-06-02T07:00"),
        # A window within one day.
        ("2026-06-01T13:00", time(12), time(14), "2026-06-01T14:00"),
        ("2026-06-01T14:00", time(12), time(14), None),
        # Across the switch to summer time (29 March 2026 in Paris, 02:00 -> 03:00).
        ("2026-03-28T23:00", time(22), time(7), "2026-03-29T07:00"),
    ],
)
def test_quiet_until(now: str, start: time, end: time, expected: str | None) -> None:
    settings = DeliverySettings(timezone="Europe/Paris", quiet_start=start, quiet_end=end)
    assert quiet_until(at(now), settings) == (at(expected) if expected else None)
