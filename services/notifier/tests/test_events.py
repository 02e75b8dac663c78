"""Notices from events: whom they go to, and whom not, checked when the event is handled."""

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from notifier import notices
from taskhub_common.bus import make_bus
from taskhub_common.events import EventEnvelope

from .conftest import (
    NOTIFICATION_FIELDS,
    assign,
    create_task,
    eventually,
    notices_of,
    rows,
    scalar,
    wait_handled,
    wait_notices,
)


async def test_assignment_tells_the_new_assignee(
    app: FastAPI, tasks_app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1], title="Write the report")
    await assign(tasks, alice[1], task, bob)
    (notice,) = await wait_notices(app, bob, 1)
    assert notice["type"] == "task_assigned"
    assert notice["task_id"] == uuid.UUID(task["id"])
    assert notice["title"] == "New task assigned"
    assert '"Write the report"' in notice["message"]
    assert notice["is_read"] is False
    await wait_handled(app, tasks_app, task, "task.assigned")
    assert await notices_of(app, alice) == [], "the actor is never told"


async def test_a_task_created_with_an_assignee_tells_them(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1], assigned_to=bob[0]["id"])
    (notice,) = await wait_notices(app, bob, 1)
    assert (notice["type"], notice["task_id"]) == ("task_assigned", uuid.UUID(task["id"]))


async def test_assigning_oneself_tells_nobody(
    app: FastAPI, tasks_app: FastAPI, tasks: httpx.AsyncClient, alice
) -> None:
    task = await create_task(tasks, alice[1])
    await assign(tasks, alice[1], task, alice)
    await wait_handled(app, tasks_app, task, "task.assigned")
    assert await notices_of(app, alice) == []


async def test_a_comment_tells_creator_and_assignee_but_not_its_author(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob, make_user
) -> None:
    carol = await make_user()
    task = await create_task(tasks, alice[1], title="Plan", assigned_to=bob[0]["id"])
    await wait_notices(app, bob, 1)
    comment_event = EventEnvelope(
        type="comment.created",
        producer="comments",
        actor_id=uuid.UUID(carol[0]["id"]),
        aggregate_id=uuid.uuid4(),
        data=comment_data(task, carol[0]),
    )
    await make_bus(None).publish(comment_event, {})
    (to_alice,) = await wait_notices(app, alice, 1)
    assert to_alice["type"] == "comment_added"
    assert to_alice["message"] == f'{carol[0]["full_name"]} commented on "Plan".'
    to_bob = (await wait_notices(app, bob, 2))[1]
    assert to_bob["type"] == "comment_added"
    assert await notices_of(app, carol) == []
    # The assignee comments: only the creator is told.
    own = comment_event.model_copy(update={"id": uuid.uuid4(), "actor_id": uuid.UUID(bob[0]["id"])})
    own.data = comment_data(task, bob[0])
    await make_bus(None).publish(own, {})
    assert len(await wait_notices(app, alice, 2)) == 2
    assert len(await notices_of(app, bob)) == 2


def comment_data(task: dict, author: dict) -> dict:
    now = datetime.now(UTC).isoformat()
    return {
        "id": str(uuid.uuid4()),
        "task_id": task["id"],
        "user_id": author["id"],
        "author": {**author, "email": None},
        "content": "hi",
        "content_html": "<p>hi</p>",
        "is_deleted": False,
        "created_at": now,
        "updated_at": now,
        "task_creator_id": task["created_by"],
        "task_assignee_id": task["assigned_to"],
    }


async def test_overdue_notice_goes_to_the_assignee_or_the_creator(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    unassigned = await create_task(tasks, alice[1], due_date=past)
    assigned = await create_task(tasks, alice[1], due_date=past, assigned_to=bob[0]["id"])
    await wait_notices(app, bob, 1)  # the assignment
    for task in (unassigned, assigned):
        response = await tasks.post(f"/api/tasks/{task['id']}/notify-overdue", headers=alice[1])
        assert response.status_code == 202
    to_bob = (await wait_notices(app, bob, 2))[1]
    assert (to_bob["type"], to_bob["task_id"]) == ("task_overdue", uuid.UUID(assigned["id"]))
    # Alice asked for the unassigned task's notice herself: the actor is not told.
    assert await notices_of(app, alice) == []
    sweep_like = EventEnvelope(
        type="task.overdue",
        producer="tasks",
        actor_id=None,
        aggregate_id=uuid.UUID(unassigned["id"]),
        data={**unassigned, "updated_at": datetime.now(UTC).isoformat()},
    )
    await make_bus(None).publish(sweep_like, {})
    (to_alice,) = await wait_notices(app, alice, 1)
    assert (to_alice["type"], to_alice["task_id"]) == ("task_overdue", uuid.UUID(unassigned["id"]))


async def test_no_overdue_notice_without_notify_overdue(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    task = await create_task(
        tasks, alice[1], due_date=past, assigned_to=bob[0]["id"], notify_overdue=False
    )
    await wait_notices(app, bob, 1)
    event = overdue_event(task)
    await make_bus(None).publish(event, {})
    assert await handled(app, event)
    assert [n["type"] for n in await notices_of(app, bob)] == ["task_assigned"]


def overdue_event(task: dict) -> EventEnvelope:
    return EventEnvelope(
        type="task.overdue",
        producer="tasks",
        aggregate_id=uuid.UUID(task["id"]),
        data={**task, "status": "overdue"},
    )


async def handled(app: FastAPI, event: EventEnvelope) -> bool:
    """Waits until the notifier has handled the event (publish only queues it)."""

    async def in_inbox() -> bool:
        return bool(await scalar(app, "SELECT count(*) FROM inbox WHERE event_id = :e", e=event.id))

    await eventually(in_inbox, f"the notifier handled {event.type} {event.id}")
    return True


async def test_no_notice_for_a_task_deleted_before_the_event_is_handled(
    app: FastAPI, tasks_app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1])
    response = await tasks.delete(f"/api/tasks/{task['id']}", headers=alice[1])
    assert response.status_code == 204
    await wait_handled(app, tasks_app, task, "task.deleted")
    # An assignment made before the delete, handled after it.
    late = EventEnvelope(
        type="task.assigned",
        producer="tasks",
        actor_id=uuid.UUID(alice[0]["id"]),
        aggregate_id=uuid.UUID(task["id"]),
        data={**task, "assigned_to": bob[0]["id"], "changes": {"assigned_to": bob[0]["id"]}},
    )
    await make_bus(None).publish(late, {})
    assert await handled(app, late)
    comment = EventEnvelope(
        type="comment.created",
        producer="comments",
        actor_id=uuid.UUID(bob[0]["id"]),
        aggregate_id=uuid.uuid4(),
        data=comment_data(task, bob[0]),
    )
    await make_bus(None).publish(comment, {})
    assert await handled(app, comment)
    assert await notices_of(app, bob) == []
    assert await notices_of(app, alice) == []


async def test_no_notice_for_a_user_no_longer_the_assignee_or_a_completed_task(
    app: FastAPI, tasks_app: FastAPI, tasks: httpx.AsyncClient, alice, bob, make_user
) -> None:
    carol = await make_user()
    task = await create_task(tasks, alice[1])
    to_carol = await assign(tasks, alice[1], task, carol)
    await wait_notices(app, carol, 1)
    # An older assignment to bob arrives late: carol is the assignee now.
    stale = EventEnvelope(
        type="task.assigned",
        producer="tasks",
        actor_id=uuid.UUID(alice[0]["id"]),
        aggregate_id=uuid.UUID(task["id"]),
        data={
            **task,
            "assigned_to": bob[0]["id"],
            "updated_at": (
                datetime.fromisoformat(to_carol["updated_at"]) - timedelta(seconds=1)
            ).isoformat(),
        },
    )
    await make_bus(None).publish(stale, {})
    assert await handled(app, stale)
    assert await notices_of(app, bob) == []
    # Completed, then an assignment that was made before arrives.
    response = await tasks.put(
        f"/api/tasks/{task['id']}", headers=alice[1], json={"status": "completed"}
    )
    assert response.status_code == 200
    await wait_handled(app, tasks_app, task, "task.completed")
    stale.id, stale.data = uuid.uuid4(), {**task, "assigned_to": bob[0]["id"]}
    await make_bus(None).publish(stale, {})
    assert await handled(app, stale)
    assert await notices_of(app, bob) == []


async def test_a_duplicate_event_makes_one_notice(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1])
    event = EventEnvelope(
        type="task.assigned",
        producer="tasks",
        actor_id=uuid.UUID(alice[0]["id"]),
        aggregate_id=uuid.UUID(task["id"]),
        data={**task, "assigned_to": bob[0]["id"], "updated_at": datetime.now(UTC).isoformat()},
    )
    for _ in range(3):
        await make_bus(None).publish(event, {})
    (notice,) = await wait_notices(app, bob, 1)
    assert notice["cause_id"] == event.id
    assert await handled(app, event)
    # Past the inbox too (another replica, a replayed dead letter): the unique key holds.
    again = notices.task_assigned(event.id, uuid.UUID(task["id"]), task["title"])
    async with app.state.database.sessionmaker() as session, session.begin():
        assert await app.state.dispatcher.deliver(session, again, [bob_id(bob)]) == []
    assert len(await notices_of(app, bob)) == 1
    mails = await rows(app, "SELECT id FROM mail_outbox WHERE cause_id = :e", e=event.id)
    assert len(mails) == 1
    events = await rows(
        app,
        "SELECT id FROM outbox WHERE routing_key = 'notification.created' "
        "AND payload->'data'->>'user_id' = :u",
        u=bob[0]["id"],
    )
    assert len(events) == 1, "one notification.created"


def bob_id(user) -> uuid.UUID:
    return uuid.UUID(user[0]["id"])


async def test_each_notice_is_announced_as_notification_created(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob
) -> None:
    task = await create_task(tasks, alice[1])
    await assign(tasks, alice[1], task, bob)
    (notice,) = await wait_notices(app, bob, 1)
    (event,) = await rows(
        app,
        "SELECT payload FROM outbox WHERE routing_key = 'notification.created' "
        "AND payload->>'aggregate_id' = :n",
        n=str(notice["id"]),
    )
    payload = event["payload"]
    assert payload["producer"] == "notifier"
    assert set(payload["data"]) == NOTIFICATION_FIELDS
    assert payload["data"]["user_id"] == bob[0]["id"]
    assert payload["data"]["type"] == "task_assigned"


async def test_assignments_handled_in_one_batch_each_see_the_state_before_them(
    app: FastAPI, tasks: httpx.AsyncClient, alice, bob, make_user
) -> None:
    """Three assignments of two tasks queued together (one batch): the second of the same task
    is weighed against the state the first left, so both its assignees are told, in order."""
    carol = await make_user()
    first = await create_task(tasks, alice[1])
    second = await create_task(tasks, alice[1])
    now = datetime.now(UTC)

    def assigned(task: dict, user, later: int) -> EventEnvelope:
        return EventEnvelope(
            type="task.assigned",
            producer="tasks",
            actor_id=uuid.UUID(alice[0]["id"]),
            aggregate_id=uuid.UUID(task["id"]),
            data={
                **task,
                "assigned_to": user[0]["id"],
                "updated_at": (now + timedelta(seconds=later)).isoformat(),
            },
        )

    batch = [assigned(first, bob, 1), assigned(second, bob, 1), assigned(first, carol, 2)]
    await make_bus(None).publish_many([(event, {}) for event in batch])
    told_bob = await wait_notices(app, bob, 2)
    assert {notice["task_id"] for notice in told_bob} == {
        uuid.UUID(first["id"]),
        uuid.UUID(second["id"]),
    }
    (told_carol,) = await wait_notices(app, carol, 1)
    assert told_carol["task_id"] == uuid.UUID(first["id"])
    assert told_carol["cause_id"] == batch[2].id
    (state,) = await rows(
        app, "SELECT assigned_to FROM task_states WHERE task_id = :t", t=uuid.UUID(first["id"])
    )
    assert state["assigned_to"] == uuid.UUID(carol[0]["id"])
