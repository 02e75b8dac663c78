"""task_tag_counts: task_counts per tag, kept by the same triggers; task_facts.cycle_hours and
the index of assignees' completed tasks in cycle-time order (performance's medians)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "created_by, assigned_to, created_day, status, priority, completed_day, due_kind"
# The count key of each visible task of a table or transition table (as in 0002); `{tag}` is
# empty for task_counts, and one row per tag of the task for task_tag_counts (a task's tag names
# are distinct: tasks keeps them unique). Nothing but constants is formatted into these.
KEYS = """
    SELECT {tag} created_by, assigned_to, (created_at AT TIME ZONE 'UTC')::date AS created_day,
           status, priority,
           CASE WHEN status = 'completed' AND completed_at IS NOT NULL
                THEN (completed_at AT TIME ZONE 'UTC')::date END AS completed_day,
           CASE WHEN status <> 'completed' THEN NULL
                WHEN due_date IS NULL THEN 'none'
                WHEN completed_at <= due_date THEN 'on_time'
                ELSE 'late' END AS due_kind
    FROM {rows} WHERE NOT is_deleted"""
TAG = "unnest(tags) AS tag,"
# Adds the deltas (key, n) to a count table in one statement, in key order so that two writers
# would take the rows' locks in the same order.
ADD_COUNTS = """
    INSERT INTO {table} AS counted ({key}, tasks)
    SELECT {key}, sum(n) FROM ({deltas}) AS deltas
    GROUP BY {key} HAVING sum(n) <> 0 ORDER BY {key}
    ON CONFLICT ({key}) DO UPDATE SET tasks = counted.tasks + excluded.tasks"""
DELTAS = "SELECT *, {n} AS n FROM ({keys}) AS {name}"
TRIGGER_FUNCTION = """
    CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
        {body};
        RETURN NULL;
    END $$"""


def deltas(tag: str, *sources: tuple[int, str]) -> str:
    return " UNION ALL ".join(
        DELTAS.format(n=n, keys=KEYS.format(tag=tag, rows=rows), name=f"d{index}")
        for index, (n, rows) in enumerate(sources)
    )


def add_counts(*sources: tuple[int, str]) -> str:
    """task_counts, then task_tag_counts: every writer takes them in this order."""
    return ";\n".join(
        (
            ADD_COUNTS.format(table="task_counts", key=KEY, deltas=deltas("", *sources)),
            ADD_COUNTS.format(
                table="task_tag_counts", key=f"tag, {KEY}", deltas=deltas(TAG, *sources)
            ),
        )
    )


def upgrade() -> None:
    op.create_table(
        "task_tag_counts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("tag", sa.String(50), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("assigned_to", sa.Uuid()),
        sa.Column("created_day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.String(20), nullable=False),
        sa.Column("completed_day", sa.Date()),
        sa.Column("due_kind", sa.String(10)),
        sa.Column("tasks", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ux_task_tag_counts_key",
        "task_tag_counts",
        ["tag", *KEY.split(", ")],
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.execute(
        TRIGGER_FUNCTION.format(name="count_inserted_tasks", body=add_counts((1, "new_rows")))
    )
    op.execute(
        TRIGGER_FUNCTION.format(
            name="count_updated_tasks", body=add_counts((1, "new_rows"), (-1, "old_rows"))
        )
    )
    # The tasks the model already holds.
    op.execute(
        ADD_COUNTS.format(
            table="task_tag_counts", key=f"tag, {KEY}", deltas=deltas(TAG, (1, "task_facts"))
        )
    )

    op.add_column(
        "task_facts",
        sa.Column(
            "cycle_hours",
            sa.Float(),
            sa.Computed(
                "CASE WHEN status = 'completed' AND completed_at IS NOT NULL THEN"
                " (extract(epoch FROM completed_at - coalesce(started_at, created_at)) / 3600)"
                "::float8 END",
                persisted=True,
            ),
        ),
    )
    op.drop_index("ix_task_facts_completed_assignee", table_name="task_facts")
    op.create_index(
        "ix_task_facts_assignee_cycle",
        "task_facts",
        ["assigned_to", "cycle_hours"],
        postgresql_include=["created_by", "created_at", "tags"],
        postgresql_where=sa.text(
            "is_deleted IS false AND cycle_hours IS NOT NULL AND assigned_to IS NOT NULL"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_task_facts_assignee_cycle", table_name="task_facts")
    op.create_index(
        "ix_task_facts_completed_assignee",
        "task_facts",
        ["assigned_to"],
        postgresql_where=sa.text(
            "is_deleted IS false AND status = 'completed' AND completed_at IS NOT NULL"
            " AND assigned_to IS NOT NULL"
        ),
    )
    op.drop_column("task_facts", "cycle_hours")
    key_only = ADD_COUNTS.format(table="task_counts", key=KEY, deltas="{deltas}")
    op.execute(
        TRIGGER_FUNCTION.format(
            name="count_inserted_tasks", body=key_only.format(deltas=deltas("", (1, "new_rows")))
        )
    )
    op.execute(
        TRIGGER_FUNCTION.format(
            name="count_updated_tasks",
            body=key_only.format(deltas=deltas("", (1, "new_rows"), (-1, "old_rows"))),
        )
    )
    op.drop_table("task_tag_counts")
