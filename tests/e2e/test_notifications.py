"""Notifications through the gateway, in every mode: an assignment becomes a notice (and an
email: an .eml file in the stacks of processes, which have no SMTP server; a message at the
compose stack's SMTP catcher, read through its Mailpit API), which its user lists, reads and
marks read; nobody else can."""

import asyncio
import email
import email.policy
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from taskhub_common.testing import create_task
from tests.e2e.accounts import register, wait_until_tasks_knows
from tests.e2e.stack import Stack

NOTIFICATION_FIELDS = {
    "id",
    "user_id",
    "task_id",
    "type",
    "title",
    "message",
    "is_read",
    "created_at",
}


async def notices_about(
    api: httpx.AsyncClient, account: dict, task_ids: set[str], timeout: float = 60
) -> list[dict]:
    """The account's notices about these tasks, once there is one for each."""
    async with asyncio.timeout(timeout):
        while True:
            response = await api.get("/api/notifications", headers=account["headers"])
            assert response.status_code == 200, response.text
            found = [n for n in response.json()["notifications"] if n["task_id"] in task_ids]
            if {n["task_id"] for n in found} == task_ids:
                return found
            await asyncio.sleep(0.1)


async def test_assignment_notice_list_read_and_read_all(api: httpx.AsyncClient, stack: Stack):
    owner, assignee = await register(api), await register(api)
    await wait_until_tasks_knows(api, owner, assignee["id"])
    created_assigned = await create_task(
        api, owner["headers"], title="Review", assigned_to=assignee["id"]
    )
    later = await create_task(api, owner["headers"], title="Deploy")
    response = await api.put(
        f"/api/tasks/{later['id']}", headers=owner["headers"], json={"assigned_to": assignee["id"]}
    )
    assert response.status_code == 200, response.text
    ids = {created_assigned["id"], later["id"]}
    notices = await notices_about(api, assignee, ids)
    assert len(notices) == 2
    for notice in notices:
        assert set(notice) == NOTIFICATION_FIELDS
        assert notice["type"] == "task_assigned"
        assert notice["user_id"] == assignee["id"]
        assert notice["is_read"] is False
    # Newest first, through the SPA's trailing slash too. (Which of the two notices is newer
    # depends on the order the events were handled in, which no bus guarantees.)
    listing = await api.get("/api/notifications/", headers=assignee["headers"])
    assert listing.status_code == 200
    body = listing.json()
    assert body["unread_count"] >= 2
    assert {n["task_id"] for n in body["notifications"]} >= ids
    times = [n["created_at"] for n in body["notifications"]]
    assert times == sorted(times, reverse=True)
    owners = await api.get("/api/notifications", headers=owner["headers"])
    assert not [n for n in owners.json()["notifications"] if n["task_id"] in ids]

    first = notices[0]
    refused = await api.put(f"/api/notifications/{first['id']}/read", headers=owner["headers"])
    assert refused.status_code == 404
    read = await api.put(f"/api/notifications/{first['id']}/read", headers=assignee["headers"])
    assert read.status_code == 200
    assert read.json()["is_read"] is True
    read_all = await api.post("/api/notifications/read-all", headers=assignee["headers"])
    assert read_all.status_code == 200
    assert read_all.json()["unread_count"] == 0
    unread = await api.get(
        "/api/notifications", headers=assignee["headers"], params={"unread": "true"}
    )
    assert unread.json() == {"notifications": [], "unread_count": 0, "next_cursor": None}
    bad = await api.get("/api/notifications", headers=assignee["headers"], params={"limit": 101})
    assert bad.status_code == 422

    messages = await emails_to(stack, assignee["request"]["email"], 2)
    links = {message.get_body(("plain",)).get_content() for message in messages}
    assert any(f"/tasks/{later['id']}" in text for text in links)


async def emails_to(stack: Stack, address: str, count: int) -> list[email.message.EmailMessage]:
    async with asyncio.timeout(60):  # the mail worker polls; a busy machine is slow
        while True:
            found = [message for message in await sent_emails(stack) if message["To"] == address]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.2)


async def sent_emails(stack: Stack) -> list[email.message.EmailMessage]:
    """Every email sent so far: at the SMTP catcher (compose), else under DATA_DIR/mail."""
    if stack.mode == "compose":
        async with httpx.AsyncClient(base_url=os.environ["E2E_MAIL_API"]) as catcher:
            listed = (await catcher.get("/api/v1/messages")).json()["messages"]
            raw = [
                (await catcher.get(f"/api/v1/message/{entry['ID']}/raw")).content
                for entry in listed
            ]
    else:
        folder = stack.workdir / "var" / "mail"
        raw = [path.read_bytes() for path in folder.glob("*.eml")] if folder.is_dir() else []
    return [email.message_from_bytes(data, policy=email.policy.default) for data in raw]


async def test_reminders_and_preferences(api: httpx.AsyncClient) -> None:
    owner, other = await register(api), await register(api)
    task = await create_task(api, owner["headers"])
    url = f"/api/tasks/{task['id']}/reminders"
    remind_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = await api.post(url, headers=owner["headers"], json={"remind_at": remind_at})
    assert created.status_code == 201, created.text
    reminder = created.json()
    assert (reminder["task_id"], reminder["user_id"]) == (task["id"], owner["id"])
    listed = await api.get(url, headers=owner["headers"])
    assert [r["id"] for r in listed.json()] == [reminder["id"]]
    mine = await api.get("/api/notifications/reminders", headers=owner["headers"])
    assert [r["id"] for r in mine.json()] == [reminder["id"]]
    assert (await api.get(url, headers=other["headers"])).json() == []
    refused = await api.delete(f"{url}/{reminder['id']}", headers=other["headers"])
    assert refused.status_code == 404
    deleted = await api.delete(f"{url}/{reminder['id']}", headers=owner["headers"])
    assert deleted.status_code == 204
    missing = await api.post(
        f"/api/tasks/{uuid.uuid4()}/reminders",
        headers=owner["headers"],
        json={"remind_at": remind_at},
    )
    assert missing.status_code == 404

    preferences = await api.put(
        "/api/notifications/preferences",
        headers=owner["headers"],
        json={"types": {"comment_added": {"email": False}}, "timezone": "Europe/Berlin"},
    )
    assert preferences.status_code == 200, preferences.text
    got = await api.get("/api/notifications/preferences", headers=owner["headers"])
    assert got.json()["types"]["comment_added"] == {"in_app": True, "email": False}
    assert got.json()["timezone"] == "Europe/Berlin"


async def test_anonymous_is_401(api: httpx.AsyncClient) -> None:
    some = uuid.uuid4()
    for method, path in [
        ("GET", "/api/notifications"),
        ("PUT", f"/api/notifications/{some}/read"),
        ("POST", f"/api/notifications/{some}/read"),
        ("POST", "/api/notifications/read-all"),
        ("GET", "/api/notifications/preferences"),
        ("GET", "/api/notifications/reminders"),
        ("GET", f"/api/tasks/{some}/reminders"),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 401, (method, path)
