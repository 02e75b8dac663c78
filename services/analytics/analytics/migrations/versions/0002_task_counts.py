"""task_counts: the counts the answers add up, kept by statement triggers on task_facts; the
indexes of tags, of open tasks by due date and of assignees' completed tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "created_by, assigned_to, created_day, status, priority, completed_day, due_kind"
# The count key of each visible task of a table (or a trigger's transition table). Nothing but
# constants is formatted into these statements.
KEYS = """
    SELECT created_by, assigned_to, (created_at AT TIME ZONE 'UTC')::date AS created_day,
           status, priority,
           CASE WHEN status = 'completed' AND completed_at IS NOT NULL
                THEN (completed_at AT TIME ZONE 'UTC')::date END AS completed_day,
           CASE WHEN status <> 'completed' THEN NULL
                WHEN due_date IS NULL THEN 'none'
                WHEN completed_at <= due_date THEN 'on_time'
                ELSE 'late' END AS due_kind
    FROM {rows} WHERE NOT is_deleted"""
# Adds the deltas (key, n) to task_counts in one statement, in key order so that two writers
# take the rows' locks in the same order.
ADD_COUNTS = """
    INSERT INTO task_counts AS counted ({key}, tasks)
    SELECT {key}, sum(n) FROM ({deltas}) AS deltas
    GROUP BY {key} HAVING sum(n) <> 0 ORDER BY {key}
    ON CONFLICT ({key}) DO UPDATE SET tasks = counted.tasks + excluded.tasks"""
DELTAS = "SELECT *, {n} AS n FROM ({keys}) AS {name}"
ADDED = DELTAS.format(n=1, keys=KEYS.format(rows="new_rows"), name="added")
REMOVED = DELTAS.format(n=-1, keys=KEYS.format(rows="old_rows"), name="removed")
HELD = DELTAS.format(n=1, keys=KEYS.format(rows="task_facts"), name="held")
TRIGGER_FUNCTION = """
    CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        {body};
        RETURN NULL;
    END $$"""


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
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
        "ux_task_counts_key",
        "task_counts",
        KEY.split(", "),
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_index("ix_task_facts_tags", "task_facts", ["tags"], postgresql_using="gin")
    op.create_index(
        "ix_task_facts_open_due",
        "task_facts",
        ["due_date"],
        postgresql_where=sa.text(
            "is_deleted IS false AND due_date IS NOT NULL AND status IN ('todo', 'in_progress')"
        ),
    )
    op.create_index(
        "ix_task_facts_completed_assignee",
        "task_facts",
        ["assigned_to"],
        postgresql_where=sa.text(
            "is_deleted IS false AND status = 'completed' AND completed_at IS NOT NULL"
            " AND assigned_to IS NOT NULL"
        ),
    )
    # Statement triggers with transition tables: an upsert of a batch (INSERT ... ON CONFLICT
    # DO UPDATE) fires both, once each, with the rows it inserted, and the rows it updated as
    # they were and as they are. The old rows are the ones the upsert locked, so concurrent
    # writers of one task (the backfill, the consumer) never count it twice.
    op.execute(
        TRIGGER_FUNCTION.format(
            name="count_inserted_tasks", body=ADD_COUNTS.format(key=KEY, deltas=ADDED)
        )
    )
    op.execute(
        TRIGGER_FUNCTION.format(
            name="count_updated_tasks",
            body=ADD_COUNTS.format(key=KEY, deltas=f"{ADDED} UNION ALL {REMOVED}"),
        )
    )
    op.execute(
        """
        CREATE TRIGGER task_facts_counted_inserts AFTER INSERT ON task_facts
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_tasks()"""
    )
    op.execute(
        """
        CREATE TRIGGER task_facts_counted_updates AFTER UPDATE ON task_facts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION count_updated_tasks()"""
    )
    # The tasks the model already holds.
    op.execute(ADD_COUNTS.format(key=KEY, deltas=HELD))


def downgrade() -> None:
    op.execute("DROP TRIGGER task_facts_counted_updates ON task_facts")
    op.execute("DROP TRIGGER task_facts_counted_inserts ON task_facts")
    op.execute("DROP FUNCTION count_updated_tasks()")
    op.execute("DROP FUNCTION count_inserted_tasks()")
    op.drop_index("ix_task_facts_completed_assignee", table_name="task_facts")
    op.drop_index("ix_task_facts_open_due", table_name="task_facts")
    op.drop_index("ix_task_facts_tags", table_name="task_facts")
    op.drop_table("task_counts")
