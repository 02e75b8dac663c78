"""Analytics through the gateway, in both modes: a read model fed by the tasks service's
events, so every check of a fresh change waits a moment for it."""

import asyncio
import io
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openpyxl import load_workbook

from taskhub_common.testing import create_task, word
from tests.e2e.accounts import register

ENDPOINTS = ("overview", "performance", "trends", "burnup", "cycle-time", "export")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def within(seconds: float, check: Callable[[], Awaitable[bool]], what: str) -> None:
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.1)
    assert await check(), what


async def answer(api: httpx.AsyncClient, account: dict, path: str, **params: str):
    response = await api.get(f"/api/analytics/{path}", headers=account["headers"], params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_task_created_then_completed_shows_within_seconds(api: httpx.AsyncClient) -> None:
    account = await register(api)
    mine = {"created_by": account["id"]}
    tag = word()
    task = await create_task(api, account["headers"], assigned_to=account["id"], tags=[tag])
    done = await api.put(
        f"/api/tasks/{task['id']}", headers=account["headers"], json={"status": "completed"}
    )
    assert done.status_code == 200, done.text

    async def everywhere() -> bool:
        overview = await answer(api, account, "overview", **mine)
        performance = await answer(api, account, "performance", **mine)
        trends = await answer(api, account, "trends", days="7", **mine)
        return (
            overview["total_tasks"] == overview["completed"] == 1
            and len(performance) == 1
            and performance[0]["completed"] == 1
            and performance[0]["username"] == account["user"]["username"]
            and trends[-1]
            == {"date": datetime.now(UTC).date().isoformat(), "created": 1, "completed": 1}
        )

    await within(30, everywhere, "the completed task shows in overview, performance and trends")
    overview = await answer(api, account, "overview", **mine)
    assert set(overview) == {
        "total_tasks",
        "completed",
        "in_progress",
        "todo",
        "overdue",
        "by_priority",
        "by_status",
    }
    performance = (await answer(api, account, "performance", **mine))[0]
    assert performance["completion_rate"] == 100.0 and performance["on_time_rate"] is None
    assert set(performance) == {
        "user_id",
        "username",
        "full_name",
        "total_assigned",
        "completed",
        "in_progress",
        "completion_rate",
        "overdue",
        "on_time_rate",
        "median_cycle_time_hours",
    }
    trends = await answer(api, account, "trends", **mine)
    assert len(trends) == 30 and set(trends[0]) == {"date", "created", "completed"}
    burnup = await answer(api, account, "burnup", days="7", **mine)
    assert burnup[-1] == {"date": trends[-1]["date"], "scope": 1, "done": 1} and len(burnup) == 7
    cycle = await answer(api, account, "cycle-time", **mine)
    assert set(cycle) == {"lead_time_hours", "cycle_time_hours", "time_in_status"}
    assert set(cycle["lead_time_hours"]) == {"count", "p50", "p75", "p90", "p95"}
    assert cycle["lead_time_hours"]["count"] == cycle["cycle_time_hours"]["count"] == 1

    # Each filter, through the gateway: one that keeps the task, one that leaves it out.
    today = datetime.now(UTC).date()
    someone_else = (await register(api))["id"]
    for kept, left_out in (
        ({"tag": tag}, {"tag": word()}),
        ({"assigned_to": account["id"]}, {"assigned_to": someone_else}),
        ({"from": str(today), "to": str(today)}, {"from": str(today + timedelta(days=1))}),
    ):
        for path in ("overview", "cycle-time"):
            assert await answer(api, account, path, **mine, **kept) == await answer(
                api, account, path, **mine
            )
        assert (await answer(api, account, "overview", **mine, **left_out))["total_tasks"] == 0
        assert await answer(api, account, "performance", **mine, **left_out) == []
        days = await answer(api, account, "trends", days="7", **mine, **left_out)
        assert days[-1]["created"] == days[-1]["completed"] == 0


async def test_export_opens_and_holds_no_formula(api: httpx.AsyncClient) -> None:
    account = await register(api)
    mine = {"created_by": account["id"]}
    await create_task(api, account["headers"], title="=1+2", description="@SUM(A1:A2)")

    async def counted() -> bool:
        return (await answer(api, account, "overview", **mine))["total_tasks"] == 1

    await within(30, counted, "the task is in the model")
    response = await api.get("/api/analytics/export", headers=account["headers"], params=mine)
    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    rows = list(load_workbook(io.BytesIO(response.content)).active.iter_rows())
    assert len(rows) == 2
    assert all(cell.data_type != "f" for row in rows for cell in row)
    assert rows[1][1].value == "'=1+2" and rows[1][2].value == "'@SUM(A1:A2)"
    assert isinstance(rows[1][8].value, datetime)
    as_csv = await api.get(
        "/api/analytics/export", headers=account["headers"], params={**mine, "format": "csv"}
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.text.splitlines()[0].startswith("ID,Title,Description")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_anonymous_401_and_bad_input_422(api: httpx.AsyncClient, endpoint: str) -> None:
    assert (await api.get(f"/api/analytics/{endpoint}")).status_code == 401
    account = await register(api)
    for bad in (
        {"assigned_to": "nobody"},
        {"from": "2026-02-30"},
        {"from": "2026-03-02", "to": "2026-03-01"},
        {"tag": "x" * 51},
    ):
        response = await api.get(
            f"/api/analytics/{endpoint}", headers=account["headers"], params=bad
        )
        assert response.status_code == 422, bad
    if endpoint in ("trends", "burnup"):
        for days in ("6", "366"):
            response = await api.get(
                f"/api/analytics/{endpoint}", headers=account["headers"], params={"days": days}
            )
            assert response.status_code == 422


async def test_openapi_holds_the_analytics_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for endpoint in ENDPOINTS:
        assert f"/api/analytics/{endpoint}" in paths
