"""workers: one row per sweep worker process, refreshed by its heartbeat (what ``/healthz`` and ``nero-study
workers`` report).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A worker (started by ``serve`` or alone with ``nero-study worker``) upserts its row every heartbeat: its id
(the lease owner name it claims sweeps with), host, process id, when it started, when it was last seen, and the
sweep it is running. A row whose ``last_seen`` is older than the liveness window is a dead worker. The table is
new: a downgrade drops it and nothing else depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_sweep", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index(op.f("ix_workers_last_seen"), "workers", ["last_seen"])


def downgrade() -> None:
    op.drop_index(op.f("ix_workers_last_seen"), table_name="workers")
    op.drop_table("workers")
