"""sweeps.version and sweeps.trials_version: counters raised with the writes that change what a sweep shows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Its trials (added, started, finished, cancelled), their learning-curve points, and the sweep's own status,
error and cancel request: each write of these through ``nero_study.store.repo`` adds one to ``version``. The
dashboards and ``/analysis`` derive their ``ETag`` from it and cache what they computed for one version
(a lease renewal, which changes nothing shown, leaves it alone). ``trials_version`` rises only with writes
that change trial rows (not curve points, not the sweep's own status): while it holds, the trials read and
analysed for an earlier version are still current. Sweeps stored before this revision start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("sweeps", sa.Column("trials_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    # In place, not by a batch copy of the table: see 0002's downgrade (the copy would cascade to every trial).
    op.drop_column("sweeps", "trials_version")
    op.drop_column("sweeps", "version")
