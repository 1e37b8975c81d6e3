"""sweeps.status: ``trials_failed``, a sweep that ran to its end but some of whose trials failed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Before this revision such a sweep was stored as ``succeeded``. Sweeps already stored keep their status; a
downgrade stores ``trials_failed`` sweeps as ``succeeded`` again (the status of that schema's day).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies: a migration is a snapshot of the schema of its day.
SWEEP_STATUSES_BEFORE = ("queued", "running", "succeeded", "failed", "cancelled")
SWEEP_STATUSES_AFTER = ("queued", "running", "succeeded", "trials_failed", "failed", "cancelled")


def _status_in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


#: Tables whose rows hang off ``sweeps`` by ON DELETE CASCADE, parents first.
_CHILDREN = ("trials", "metric_points")


def _replace_status_check(values: tuple[str, ...]) -> None:
    # SQLite changes a CHECK by copying the table and dropping the old one; with foreign keys on (they are, and
    # the pragma cannot change inside the migration's transaction) that drop deletes every trial and curve
    # point by cascade. Keep copies of them and put them back once the new table has its old name.
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for table in _CHILDREN:
            op.execute(sa.text(f"CREATE TEMP TABLE keep_{table} AS SELECT * FROM {table}"))
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_constraint(op.f("ck_sweeps_status"), type_="check")
        batch.create_check_constraint(op.f("ck_sweeps_status"), _status_in(values))
    if sqlite:
        for table in reversed(_CHILDREN):
            op.execute(sa.text(f"DELETE FROM {table}"))
        for table in _CHILDREN:
            op.execute(sa.text(f"INSERT INTO {table} SELECT * FROM keep_{table}"))
            op.execute(sa.text(f"DROP TABLE keep_{table}"))


def upgrade() -> None:
    _replace_status_check(SWEEP_STATUSES_AFTER)


def downgrade() -> None:
    op.execute(sa.text("UPDATE sweeps SET status = 'succeeded' WHERE status = 'trials_failed'"))
    _replace_status_check(SWEEP_STATUSES_BEFORE)
