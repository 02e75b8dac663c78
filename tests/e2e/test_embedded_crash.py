"""The embedded mode loses no event when the process is killed in the middle of work: every
task deleted in tasks is known as deleted to comments and to files after a restart."""

import asyncio
import time

import asyncpg
import httpx
import pytest

from taskhub_common.testing import bearer, new_user
from tests.e2e.stack import Stack

# It starts stacks of its own within the test: on a loaded machine that takes minutes.
pytestmark = pytest.mark.timeout(600)

# The kill lands after KILL_AFTER answers; at most eight deletes are then in flight, so the
# other few hundred are a margin for a slow machine, not work the test waits for.
TASKS = 400
KILL_AFTER = 100


async def delete_until_killed(base_url: str, headers: dict, ids: list[str], kill) -> int:
    """Delete tasks eight at a time; SIGKILL the process once KILL_AFTER deletes answered."""
    done = 0
    pending = iter(ids)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:

        async def worker() -> None:
            nonlocal done
            for task_id in pending:
                try:
                    response = await client.delete(f"/api/tasks/{task_id}")
                except httpx.HTTPError:
                    return  # the process is gone
                assert response.status_code == 204, response.text
                done += 1
                if done == KILL_AFTER:
                    kill()

        await asyncio.gather(*(worker() for _ in range(8)))
    return done


async def deleted_counts(stack: Stack) -> dict[str, int]:
    connection = await asyncpg.connect(**stack.database_address())
    try:
        return {
            "tasks": await connection.fetchval("SELECT count(*) FROM tasks.tasks WHERE is_deleted"),
            "comments": await connection.fetchval("SELECT count(*) FROM comments.deleted_tasks"),
            "files": await connection.fetchval("SELECT count(*) FROM files.deleted_tasks"),
            "unsent": await connection.fetchval(
                "SELECT count(*) FROM tasks.outbox WHERE sent_at IS NULL"
            ),
            "dead": await connection.fetchval(
                "SELECT (SELECT count(*) FROM comments.event_queue WHERE dead_at IS NOT NULL)"
                " + (SELECT count(*) FROM files.event_queue WHERE dead_at IS NOT NULL)"
            ),
        }
    finally:
        await connection.close()


async def test_no_event_is_lost_when_the_embedded_process_is_killed(tmp_path) -> None:
    # A burst of deletes from one user: the per-user rate limit is not under test here.
    stack = Stack(
        "embedded",
        tmp_path,
        extra_env={"ENVIRONMENT": "test", "RATE_LIMIT_DEFAULT": "100000/minute"},
    )
    base_url = stack.start()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            user = (await client.post("/api/auth/register", json=new_user())).json()
            headers = bearer(user["access_token"])
            created = await client.post(
                "/api/tasks/bulk",
                json={"tasks": [{"title": f"doomed {n}"} for n in range(TASKS)]},
                headers=headers,
            )
        assert created.status_code == 201, created.text
        ids = [task["id"] for task in created.json()]
        answered = await delete_until_killed(
            base_url, headers, ids, kill=lambda: stack.processes[0].kill()
        )
        assert KILL_AFTER <= answered < TASKS, "the kill must land in the middle of the burst"
    finally:
        if stack.processes[0].popen.poll() is None:
            stack.stop()

    stack.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            counts = await deleted_counts(stack)
            converged = counts["tasks"] == counts["comments"] == counts["files"]
            if (converged and counts["unsent"] == 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert counts["tasks"] >= answered
        assert counts["comments"] == counts["tasks"], counts
        assert counts["files"] == counts["tasks"], counts
        assert counts["unsent"] == 0
        assert counts["dead"] == 0
    finally:
        assert stack.stop() == [0]
    # The restarted process took over the server the killed one left running, and stopped it.
    assert not (tmp_path / "var" / "pgdata" / "postmaster.pid").exists()
