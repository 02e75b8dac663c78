"""Every answer of the read model equals a brute-force computation in Python over the same
tasks: events crafted per version of each task (creations, reassignments, progress, overdue
marks, completions, deletions), delivered shuffled, some twice, some again under a new id."""

import random
import statistics
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from taskhub_common.contracts import (
    TASK_ASSIGNED,
    TASK_COMPLETED,
    TASK_CREATED,
    TASK_DELETED,
    TASK_OVERDUE,
    TASK_UPDATED,
    USER_REGISTERED,
    UserData,
)
from taskhub_common.events import EventEnvelope
from taskhub_common.testing import word

STATUSES = ("todo", "in_progress", "completed", "overdue")
PRIORITIES = ("low", "medium", "high", "urgent")
FRACTIONS = {"p50": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95}


# The scenario: each task's versions, as the tasks service would publish them.


def new_task(
    rng: random.Random, now: datetime, owner: uuid.UUID, people: list, tags: list[str]
) -> dict[str, Any]:
    created_at = now - timedelta(days=rng.uniform(0.2, 40))
    due_date = rng.choice(
        [None, now - timedelta(days=rng.uniform(1, 10)), now + timedelta(days=rng.uniform(1, 10))]
    )
    return {
        "id": uuid.uuid4(),
        "title": rng.choice(["Plan", "=SUM(A1)", "+1", "Write"]) + f" {rng.randrange(1000)}",
        "description": rng.choice([None, "plain", "@cmd"]),
        "status": "todo",
        "priority": rng.choice(PRIORITIES),
        "start_date": None,
        "due_date": due_date,
        "completed_at": None,
        "notify_overdue": True,
        "is_deleted": False,
        "created_by": owner,
        "assigned_to": rng.choice(people),
        "tags": [
            {"id": uuid.uuid4(), "name": name, "color": "#112233", "created_at": created_at}
            for name in rng.sample(tags, rng.randrange(len(tags) + 1))
        ],
        "created_at": created_at,
        "updated_at": created_at,
    }


def versions(
    rng: random.Random, now: datetime, task: dict[str, Any], people: list
) -> list[tuple[str, dict[str, Any]]]:
    """(event type, the task after the change) for each change of one task's life."""
    life = [(TASK_CREATED, task)]
    step = (now - task["created_at"]) / 7

    def change(event_type: str, **fields: Any) -> None:
        latest = life[-1][1]
        moment = latest["updated_at"] + step * rng.uniform(0.3, 1)
        life.append((event_type, {**latest, **fields, "updated_at": moment}))

    if rng.random() < 0.7:
        change(TASK_UPDATED, status="in_progress")
    if rng.random() < 0.4:
        change(TASK_ASSIGNED, assigned_to=rng.choice(people))
    due = life[-1][1]["due_date"]
    if due is not None and due < now and rng.random() < 0.6:
        change(TASK_OVERDUE, status="overdue")
    if rng.random() < 0.55:
        change(TASK_COMPLETED, status="completed")
        life[-1][1]["completed_at"] = life[-1][1]["updated_at"]
    if rng.random() < 0.15:
        change(TASK_DELETED, is_deleted=True)
    return life


def envelope(event_type: str, data: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(
        type=event_type, producer="tasks", aggregate_id=data["id"], data=jsonable(data)
    )


def jsonable(data: dict[str, Any]) -> dict[str, Any]:
    from taskhub_common.contracts import TaskData

    return TaskData.model_validate(data).model_dump(mode="json")


# The brute force: the final state of each task, and every answer computed from it.


def final_states(lives: list[list[tuple[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    states = []
    for life in lives:
        snapshots = sorted((data for _, data in life), key=lambda data: data["updated_at"])
        progress = [data["updated_at"] for data in snapshots if data["status"] == "in_progress"]
        states.append(
            {
                **snapshots[-1],
                "is_deleted": any(data["is_deleted"] for data in snapshots),
                "tag_names": [tag["name"] for tag in snapshots[-1]["tags"]],
                "started_at": min(progress, default=None),
                "history": [(data["updated_at"], data["status"]) for data in snapshots],
            }
        )
    return states


def visible(states: list[dict], **filters: Any) -> list[dict]:
    chosen = []
    for task in states:
        if task["is_deleted"]:
            continue
        if "assigned_to" in filters and task["assigned_to"] != filters["assigned_to"]:
            continue
        if "created_by" in filters and task["created_by"] != filters["created_by"]:
            continue
        if "tag" in filters and filters["tag"] not in task["tag_names"]:
            continue
        created_day = task["created_at"].date()
        if "from" in filters and created_day < filters["from"]:
            continue
        if "to" in filters and created_day > filters["to"]:
            continue
        chosen.append(task)
    return chosen


def is_overdue(task: dict, now: datetime) -> bool:
    past_due = task["due_date"] is not None and task["due_date"] < now
    return task["status"] == "overdue" or (task["status"] in ("todo", "in_progress") and past_due)


def percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


def hours(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 3600


def expected_overview(tasks: list[dict], now: datetime) -> dict:
    by_status = {status: sum(t["status"] == status for t in tasks) for status in STATUSES}
    return {
        "total_tasks": len(tasks),
        "completed": by_status["completed"],
        "in_progress": by_status["in_progress"],
        "todo": by_status["todo"],
        "overdue": sum(is_overdue(t, now) for t in tasks),
        "by_priority": {p: sum(t["priority"] == p for t in tasks) for p in PRIORITIES},
        "by_status": by_status,
    }


def expected_performance(tasks: list[dict], now: datetime, names: dict) -> list[dict]:
    rows = []
    for user_id in {t["assigned_to"] for t in tasks if t["assigned_to"] is not None}:
        mine = [t for t in tasks if t["assigned_to"] == user_id]
        done = [t for t in mine if t["status"] == "completed"]
        with_due = [t for t in done if t["due_date"] is not None]
        on_time = sum(t["completed_at"] <= t["due_date"] for t in with_due)
        cycles = [hours(t["completed_at"], t["started_at"] or t["created_at"]) for t in done]
        username, full_name = names.get(user_id, (None, None))
        rows.append(
            {
                "user_id": str(user_id),
                "username": username,
                "full_name": full_name,
                "total_assigned": len(mine),
                "completed": len(done),
                "in_progress": sum(t["status"] == "in_progress" for t in mine),
                "completion_rate": percent(len(done), len(mine)),
                "overdue": sum(is_overdue(t, now) for t in mine),
                "on_time_rate": (percent(on_time, len(with_due)) if with_due else None),
                "median_cycle_time_hours": round(statistics.median(cycles), 2) if cycles else None,
            }
        )
    return sorted(rows, key=lambda r: (r["username"] is None, r["username"] or "", r["user_id"]))


def days_until_today(days: int) -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def completed_day(task: dict) -> date | None:
    done = task["status"] == "completed" and task["completed_at"] is not None
    return task["completed_at"].date() if done else None


def expected_trends(tasks: list[dict], days: int) -> list[dict]:
    return [
        {
            "date": day.isoformat(),
            "created": sum(t["created_at"].date() == day for t in tasks),
            "completed": sum(completed_day(t) == day for t in tasks),
        }
        for day in days_until_today(days)
    ]


def expected_burnup(tasks: list[dict], days: int) -> list[dict]:
    rows = []
    for day in days_until_today(days):
        scope = [t for t in tasks if t["created_at"].date() <= day]
        done = [t for t in scope if (completed_day(t) or date.max) <= day]
        rows.append({"date": day.isoformat(), "scope": len(scope), "done": len(done)})
    return rows


def percentile(values: list[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def percentiles(values: list[float]) -> dict:
    return {
        "count": len(values),
        **{
            name: round(percentile(values, fraction), 2) if values else None
            for name, fraction in FRACTIONS.items()
        },
    }


def expected_cycle_time(tasks: list[dict], now: datetime) -> dict:
    done = [t for t in tasks if completed_day(t) is not None]
    spent: dict[str, float] = {}
    seen: dict[str, set] = {}
    for task in tasks:
        history = sorted(task["history"])
        for index, (changed_at, status) in enumerate(history):
            if index + 1 < len(history):
                until = history[index + 1][0]
            else:
                until = changed_at if status == "completed" else now
            spent[status] = spent.get(status, 0.0) + hours(until, changed_at)
            seen.setdefault(status, set()).add(task["id"])
    return {
        "lead_time_hours": percentiles([hours(t["completed_at"], t["created_at"]) for t in done]),
        "cycle_time_hours": percentiles(
            [hours(t["completed_at"], t["started_at"] or t["created_at"]) for t in done]
        ),
        "time_in_status": {
            status: {
                "total_hours": round(total, 2),
                "mean_hours": round(total / len(seen[status]), 2),
            }
            for status, total in spent.items()
            if status != "completed"
        },
    }


def params_of(filters: dict) -> dict:
    return {key: str(value) for key, value in filters.items()}


def assert_close(actual: Any, expected: Any, tolerance: float = 0.011, path: str = "") -> None:
    """Equal, floats within `tolerance` (rounded hours computed a moment apart)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            assert_close(actual[key], expected[key], tolerance, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), path
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_close(got, want, tolerance, f"{path}[{index}]")
    elif isinstance(expected, float) and actual is not None:
        assert actual == pytest.approx(expected, abs=tolerance), path
    else:
        assert actual == expected, path


async def get(client: httpx.AsyncClient, headers: dict, path: str, **params: Any) -> Any:
    response = await client.get(f"/api/analytics/{path}", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def stranger_registered() -> EventEnvelope:
    """A user.registered of nobody in the scenario: between task events in a batch, it splits
    them into runs (several upserts in one transaction)."""
    user = {
        "id": uuid.uuid4(),
        "email": f"{word()}@example.com",
        "username": word(),
        "full_name": "Someone Else",
        "avatar_url": None,
        "is_active": True,
        "created_at": datetime.now(UTC),
    }
    data = UserData.model_validate(user).model_dump(mode="json")
    return EventEnvelope(
        type=USER_REGISTERED, producer="identity", aggregate_id=user["id"], data=data
    )


@pytest.mark.parametrize("delivery", ["one at a time", "in batches"])
async def test_every_answer_equals_the_brute_force_computation(
    client: httpx.AsyncClient, deliver, deliver_batch, alice, bob, delivery: str
) -> None:
    rng = random.Random(20261129)
    now = datetime.now(UTC)
    owner = uuid.uuid4()  # every task of this test, and no other: the filter isolates them
    stranger = uuid.uuid4()  # an assignee the directory does not know
    people = [uuid.UUID(alice[0]["id"]), uuid.UUID(bob[0]["id"]), stranger, None]
    names = {
        uuid.UUID(user["id"]): (user["username"], user["full_name"]) for user, _ in (alice, bob)
    }
    tags = [word(), word(), word()]
    lives = [versions(rng, now, new_task(rng, now, owner, people, tags), people) for _ in range(80)]
    envelopes = [envelope(event_type, data) for life in lives for event_type, data in life]
    # Redelivered (same id: the inbox drops it) and republished (new id: the version does).
    deliveries = envelopes + rng.sample(envelopes, 30)
    deliveries += [e.model_copy(update={"id": uuid.uuid4()}) for e in rng.sample(envelopes, 30)]
    rng.shuffle(deliveries)
    if delivery == "one at a time":
        for event in deliveries:
            await deliver(event)
    else:
        # Batches of 1 to 40 as the bus hands them over, a user event now and then among
        # them; a task's versions may share a batch (folded into one row first).
        while deliveries:
            size = rng.randint(1, 40)
            batch, deliveries = deliveries[:size], deliveries[size:]
            if rng.random() < 0.5:
                batch.insert(rng.randrange(len(batch) + 1), stranger_registered())
            await deliver_batch(batch)

    states = final_states(lives)
    assert any(s["is_deleted"] for s in states) and any(s["status"] == "overdue" for s in states)
    assert any(len({d["assigned_to"] for _, d in life}) > 1 for life in lives), "reassignments"
    assert sum(row["completed"] for row in expected_trends(visible(states), 45)) > 5
    headers = alice[1]
    some_day = (now - timedelta(days=20)).date()
    filter_sets = [
        {"created_by": owner},
        {"created_by": owner, "assigned_to": people[0]},
        {"created_by": owner, "tag": tags[0]},
        {"created_by": owner, "from": some_day, "to": now.date() - timedelta(days=2)},
    ]
    for filters in filter_sets:
        tasks = visible(states, **filters)
        assert tasks, f"the scenario has tasks for {filters}"
        params = params_of(filters)
        now = datetime.now(UTC)
        assert await get(client, headers, "overview", **params) == expected_overview(tasks, now)
        assert_close(
            await get(client, headers, "performance", **params),
            expected_performance(tasks, now, names),
        )
        for days in (7, 30, 45):
            trends = await get(client, headers, "trends", days=days, **params)
            assert trends == expected_trends(tasks, days)
            burnup = await get(client, headers, "burnup", days=days, **params)
            assert burnup == expected_burnup(tasks, days)
        assert_close(
            await get(client, headers, "cycle-time", **params),
            expected_cycle_time(tasks, datetime.now(UTC)),
        )
    default_trends = await get(client, headers, "trends", created_by=str(owner))
    assert len(default_trends) == 30 and default_trends[-1]["date"] == now.date().isoformat()

    # Everything once more, newest first under new ids: nothing changes.
    for event in reversed(envelopes):
        await deliver(event.model_copy(update={"id": uuid.uuid4()}))
    tasks = visible(states, created_by=owner)
    overview = await get(client, headers, "overview", created_by=str(owner))
    assert overview == expected_overview(tasks, datetime.now(UTC))
    assert_close(
        await get(client, headers, "cycle-time", created_by=str(owner)),
        expected_cycle_time(tasks, datetime.now(UTC)),
    )
