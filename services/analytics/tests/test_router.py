"""The endpoints through the real tasks service: events in, answers out; auth and validation."""

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook

from taskhub_common.testing import create_task, eventually, word

ENDPOINTS = ("overview", "performance", "trends", "burnup", "cycle-time", "export")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
COLUMNS = [
    "ID",
    "Title",
    "Description",
    "Status",
    "Priority",
    "Assignee",
    "Tags",
    "Due Date",
    "Created At",
    "Completed At",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_anonymous_callers_are_refused(client: httpx.AsyncClient, endpoint: str) -> None:
    response = await client.get(f"/api/analytics/{endpoint}")
    assert response.status_code == 401
    bad_token = {"Authorization": "Bearer not-a-token"}
    assert (await client.get(f"/api/analytics/{endpoint}", headers=bad_token)).status_code == 401


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "params",
    [
        {"assigned_to": "not-a-uuid"},
        {"created_by": "42"},
        {"from": "2026-13-01"},
        {"to": "0"},
        {"from": "1700000000"},
        {"from": "2026-5-1"},
        {"from": "2026-05-02", "to": "2026-05-01"},
        {"tag": ""},
        {"tag": "x" * 51},
    ],
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, alice, endpoint: str, params: dict
) -> None:
    response = await client.get(f"/api/analytics/{endpoint}", headers=alice[1], params=params)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("endpoint", ["trends", "burnup"])
@pytest.mark.parametrize("days", ["6", "366", "0", "-1", "many"])
async def test_days_out_of_range_are_422(
    client: httpx.AsyncClient, alice, endpoint: str, days: str
) -> None:
    response = await client.get(
        f"/api/analytics/{endpoint}", headers=alice[1], params={"days": days}
    )
    assert response.status_code == 422


async def test_unknown_export_format_is_422(client: httpx.AsyncClient, alice) -> None:
    response = await client.get("/api/analytics/export", headers=alice[1], params={"format": "pdf"})
    assert response.status_code == 422


async def overview_of(client: httpx.AsyncClient, headers: dict, **params: str) -> dict:
    response = await client.get("/api/analytics/overview", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_task_created_then_completed_shows_everywhere(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, make_user
) -> None:
    """Every active user reads the workspace's analytics; the cache drops on each event."""
    owner, headers = await make_user()
    reader = (await make_user())[1]
    params = {"created_by": owner["id"]}
    assert (await overview_of(client, reader, **params))["total_tasks"] == 0
    task = await create_task(tasks, headers, assigned_to=owner["id"], priority="high")

    async def counted() -> bool:
        return (await overview_of(client, reader, **params))["total_tasks"] == 1

    await eventually(counted, "the new task is counted")
    done = await tasks.put(
        f"/api/tasks/{task['id']}", headers=headers, json={"status": "completed"}
    )
    assert done.status_code == 200, done.text

    async def completed() -> bool:
        return (await overview_of(client, reader, **params))["completed"] == 1

    await eventually(completed, "the completion is counted")
    overview = await overview_of(client, reader, **params)
    assert overview["by_priority"]["high"] == 1 and overview["by_status"]["completed"] == 1
    performance = await client.get("/api/analytics/performance", headers=reader, params=params)
    assert performance.json() == [
        {
            "user_id": owner["id"],
            "username": owner["username"],
            "full_name": owner["full_name"],
            "total_assigned": 1,
            "completed": 1,
            "in_progress": 0,
            "completion_rate": 100.0,
            "overdue": 0,
            "on_time_rate": None,
            "median_cycle_time_hours": pytest.approx(0.0, abs=0.01),
        }
    ]
    trends = await client.get("/api/analytics/trends", headers=reader, params=params)
    today = {"date": datetime.now(UTC).date().isoformat(), "created": 1, "completed": 1}
    assert trends.json()[-1] == today

    deleted = await tasks.delete(f"/api/tasks/{task['id']}", headers=headers)
    assert deleted.status_code == 204

    async def gone() -> bool:
        return (await overview_of(client, reader, **params))["total_tasks"] == 0

    await eventually(gone, "the deleted task leaves every aggregate")


async def test_export_is_a_workbook_of_plain_text_and_real_dates(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, make_user
) -> None:
    owner, headers = await make_user()
    tag = word()
    due = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    # The last: control characters XML cannot hold, which made the export a 500.
    hostile = ['=HYPERLINK("http://x")', "+1+2", "-3", "@SUM(A1)", "\tTab", "\rCR", "a\x01\x1fb"]
    made = [
        await create_task(
            tasks,
            headers,
            title=title,
            description=title,
            tags=[tag],
            due_date=due.isoformat(),
            assigned_to=owner["id"],
        )
        for title in hostile
    ]
    params = {"created_by": owner["id"]}

    async def all_counted() -> bool:
        return (await overview_of(client, headers, **params))["total_tasks"] == len(made)

    await eventually(all_counted, "every task is in the model")
    response = await client.get("/api/analytics/export", headers=headers, params=params)
    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    assert "attachment" in response.headers["content-disposition"]
    sheet = load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows())
    assert [cell.value for cell in rows[0]] == COLUMNS
    assert len(rows) == 1 + len(made)
    for row in rows[1:]:
        for cell in row:
            assert cell.data_type != "f", f"{cell.coordinate} is a formula"
            if isinstance(cell.value, str):
                assert not cell.value.startswith(("=", "+", "-", "@", "\t", "\r"))
        values = dict(zip(COLUMNS, (cell.value for cell in row), strict=True))
        assert isinstance(values["Due Date"], datetime)
        assert values["Due Date"] == due.replace(tzinfo=None)
        assert isinstance(values["Created At"], datetime)
        assert values["Assignee"] == owner["username"] and values["Tags"] == tag
    titles = sorted(row[1].value for row in rows[1:])
    stored = [task["title"] for task in made]  # tasks trims the tab and CR away
    neutralised = ["'" + t if t.startswith(("=", "+", "-", "@", "\t", "\r")) else t for t in stored]
    assert titles == sorted(
        t.replace("\x01", "\ufffd").replace("\x1f", "\ufffd") for t in neutralised
    )
    assert sum(title.startswith("'") for title in titles) >= 4

    as_csv = await client.get(
        "/api/analytics/export", headers=headers, params={**params, "format": "csv"}
    )
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(as_csv.text)))
    assert lines[0] == COLUMNS and len(lines) == 1 + len(made)
    assert "a\x01\x1fb" in [line[1] for line in lines[1:]], "CSV keeps the text as it is"
    assert sorted(line[0] for line in lines[1:]) == sorted(task["id"] for task in made)
    assert all(not line[1].startswith(("=", "+", "-", "@")) for line in lines[1:])

    by_tag = await client.get(
        "/api/analytics/export", headers=headers, params={"tag": word(), "format": "csv"}
    )
    assert list(csv.reader(io.StringIO(by_tag.text))) == [COLUMNS]


async def test_filters_narrow_each_answer(
    client: httpx.AsyncClient, tasks: httpx.AsyncClient, make_user
) -> None:
    owner, headers = await make_user()
    other, _ = await make_user()
    tag = word()
    await create_task(tasks, headers, tags=[tag], assigned_to=other["id"])
    await create_task(tasks, headers)
    params = {"created_by": owner["id"]}

    async def both() -> bool:
        return (await overview_of(client, headers, **params))["total_tasks"] == 2

    await eventually(both, "both tasks are counted")
    assert (await overview_of(client, headers, **params, tag=tag))["total_tasks"] == 1
    assigned = await overview_of(client, headers, **params, assigned_to=other["id"])
    assert assigned["total_tasks"] == 1
    nobody = await overview_of(client, headers, assigned_to=str(uuid.uuid4()))
    assert nobody["total_tasks"] == 0
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert (await overview_of(client, headers, **params, **{"from": tomorrow}))["total_tasks"] == 0
    today = datetime.now(UTC).date().isoformat()
    window = {"from": today, "to": today}
    assert (await overview_of(client, headers, **params, **window))["total_tasks"] == 2
