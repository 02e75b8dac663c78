"""Events: one outbox event per write, with the task's people; task.deleted consumed."""

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI

from taskhub_common.bus import Subscription, make_bus
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import scalar, wait_task_deleted

from .conftest import (
    check_envelope,
    comments_url,
    create_task,
    delete_task,
    events_of_task,
    list_comments,
    post_comment,
    rows_of_task,
    wait_all_sent,
)


@pytest.fixture
async def assigned_task(tasks: httpx.AsyncClient, alice, bob) -> dict:
    """A task alice created and assigned to bob."""
    return await create_task(tasks, alice[1], assigned_to=bob[0]["id"])


async def test_create_writes_one_comment_created_event(
    app: FastAPI, client: httpx.AsyncClient, alice, bob, make_user, assigned_task
) -> None:
    third, headers = await make_user()
    comment = await post_comment(client, headers, assigned_task["id"], "ping @bob")
    (event,) = await wait_all_sent(app, assigned_task["id"])
    check_envelope(event, "comment.created", third["id"], comment, assigned_task)
    assert event["data"]["task_creator_id"] == alice[0]["id"]
    assert event["data"]["task_assignee_id"] == bob[0]["id"]
    assert "changes" not in event["data"]


async def test_an_unassigned_task_has_no_assignee_in_the_event(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    (event,) = await wait_all_sent(app, task["id"])
    check_envelope(event, "comment.created", alice[0]["id"], comment, task)
    assert event["data"]["task_assignee_id"] is None


async def test_update_writes_one_comment_updated_event(
    app: FastAPI, client: httpx.AsyncClient, bob, assigned_task
) -> None:
    comment = await post_comment(client, bob[1], assigned_task["id"], "draft")
    response = await client.put(
        comments_url(assigned_task["id"], comment["id"]),
        headers=bob[1],
        json={"content": "**done**"},
    )
    updated = response.json()
    created_event, updated_event = await wait_all_sent(app, assigned_task["id"])
    assert created_event["type"] == "comment.created"
    check_envelope(updated_event, "comment.updated", bob[0]["id"], updated, assigned_task)
    assert updated_event["data"]["changes"] == {
        "content": "**done**",
        "content_html": "<p><strong>done</strong></p>",
    }


async def test_an_update_that_changes_nothing_writes_no_event(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"], "same")
    response = await client.put(
        comments_url(task["id"], comment["id"]), headers=alice[1], json={"content": "same"}
    )
    assert response.status_code == 200
    assert [event["type"] for event in await events_of_task(app, task["id"])] == ["comment.created"]


async def test_delete_writes_one_comment_deleted_event(
    app: FastAPI, client: httpx.AsyncClient, bob, assigned_task
) -> None:
    comment = await post_comment(client, bob[1], assigned_task["id"], "oops")
    url = comments_url(assigned_task["id"], comment["id"])
    assert (await client.delete(url, headers=bob[1])).status_code == 204
    _, deleted = await wait_all_sent(app, assigned_task["id"])
    (row,) = await rows_of_task(app, assigned_task["id"])
    after = {**comment, "is_deleted": True, "updated_at": deleted["data"]["updated_at"]}
    check_envelope(deleted, "comment.deleted", bob[0]["id"], after, assigned_task)
    assert deleted["data"]["changes"] == {"is_deleted": True}
    assert deleted["data"]["content"] == "oops", "the representation after the change"
    assert row["is_deleted"] is True


async def test_refused_writes_write_no_event(
    app: FastAPI, client: httpx.AsyncClient, alice, bob, task
) -> None:
    comment = await post_comment(client, alice[1], task["id"])
    url = comments_url(task["id"], comment["id"])
    refused = [
        await client.put(url, headers=bob[1], json={"content": "mine now"}),
        await client.delete(url, headers=bob[1]),
        await client.put(url, headers=alice[1], json={"content": ""}),
        await client.post(comments_url(task["id"]), headers=alice[1], json={"content": ""}),
        await client.put(url, json={"content": "anonymous"}),
        await client.put(
            comments_url(task["id"], str(uuid.uuid4())), headers=alice[1], json={"content": "x"}
        ),
    ]
    assert [response.status_code for response in refused] == [403, 403, 422, 422, 401, 404]
    assert [event["type"] for event in await events_of_task(app, task["id"])] == ["comment.created"]


async def test_every_write_is_delivered_on_the_bus(
    app: FastAPI, client: httpx.AsyncClient, alice, task
) -> None:
    """The relay publishes each event under its type as the routing key."""
    received: list[EventEnvelope] = []

    async def listen(envelope: EventEnvelope) -> None:
        if envelope.data.get("task_id") == task["id"]:
            received.append(envelope)

    await make_bus(None).subscribe(
        Subscription(
            queue="comments-tests.listener",
            routing_keys=["comment.*"],
            handler=listen,
            max_attempts=1,
            retry_delays_ms=[10],
        )
    )
    comment = await post_comment(client, alice[1], task["id"], "one")
    url = comments_url(task["id"], comment["id"])
    await client.put(url, headers=alice[1], json={"content": "two"})
    await client.delete(url, headers=alice[1])
    for _ in range(500):
        if len(received) == 3:
            break
        await asyncio.sleep(0.01)
    assert [envelope.type for envelope in received] == [
        "comment.created",
        "comment.updated",
        "comment.deleted",
    ]
    assert {envelope.aggregate_id for envelope in received} == {uuid.UUID(comment["id"])}
    assert all(envelope.producer == "comments" for envelope in received)


async def test_task_deleted_stops_the_comments_and_destroys_nothing(
    app: FastAPI, client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, bob, task
) -> None:
    first = await post_comment(client, alice[1], task["id"], "first")
    second = await post_comment(client, bob[1], task["id"], "second")
    await delete_task(tasks, alice[1], task["id"])
    await wait_task_deleted(app, task["id"])
    assert (await client.get(comments_url(task["id"]), headers=alice[1])).status_code == 404
    rows = await rows_of_task(app, task["id"])
    assert [(row["id"], row["is_deleted"]) for row in rows] == [
        (uuid.UUID(first["id"]), False),
        (uuid.UUID(second["id"]), False),
    ]
    assert [event["type"] for event in await events_of_task(app, task["id"])] == [
        "comment.created",
        "comment.created",
    ], "the task's delete writes no comment events"


async def test_the_flag_decides_even_while_tasks_still_serves_the_task(
    app: FastAPI, client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, bob, task
) -> None:
    """Once task.deleted has arrived, comments answers 404 without trusting tasks' answer
    (which here still says the task is live)."""
    comment = await post_comment(client, bob[1], task["id"])
    event = EventEnvelope(
        type="task.deleted",
        producer="tasks",
        actor_id=uuid.UUID(alice[0]["id"]),
        aggregate_id=uuid.UUID(task["id"]),
        data={**task, "is_deleted": True, "changes": {"is_deleted": True}},
    )
    await make_bus(None).publish(event, {})
    await wait_task_deleted(app, task["id"])
    assert (await tasks.get(f"/api/tasks/{task['id']}", headers=alice[1])).status_code == 200
    for method, url in [
        ("POST", comments_url(task["id"])),
        ("GET", comments_url(task["id"])),
        ("PUT", comments_url(task["id"], comment["id"])),
        ("DELETE", comments_url(task["id"], comment["id"])),
    ]:
        response = await client.request(method, url, headers=bob[1], json={"content": "x"})
        assert response.status_code == 404, method
    # Delivered again (a duplicate) and announced again (a new event): nothing changes.
    await make_bus(None).publish(event, {})
    await make_bus(None).publish(event.model_copy(update={"id": uuid.uuid4()}), {})
    flagged = await scalar(
        app, "SELECT count(*) FROM deleted_tasks WHERE task_id = :id", id=uuid.UUID(task["id"])
    )
    assert flagged == 1
    (row,) = await rows_of_task(app, task["id"])
    assert row["is_deleted"] is False


async def test_other_tasks_are_unaffected_by_a_task_deleted(
    app: FastAPI, client: httpx.AsyncClient, tasks: httpx.AsyncClient, alice, task
) -> None:
    doomed = await create_task(tasks, alice[1])
    kept = await post_comment(client, alice[1], task["id"], "kept")
    await post_comment(client, alice[1], doomed["id"], "doomed")
    await delete_task(tasks, alice[1], doomed["id"])
    await wait_task_deleted(app, doomed["id"])
    assert await list_comments(client, alice[1], task["id"]) == ([kept], 1)
