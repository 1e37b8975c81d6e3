"""trials.changed_version: the sweep version in which each trial row last changed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Every write that changes a sweep's trial rows raises the sweep's ``trials_version``; from this revision it also
stamps the rows it changes with that new version, so a page that holds a sweep's trials as of one version reads
only the rows changed since (indexed by sweep and stamp) instead of all of them. Rows stored before this revision
get 0: they count as unchanged since any version, which is right, as no reader keeps trials across the upgrade
(what pages keep lives in the API's memory).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("trials", sa.Column("changed_version", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_trials_sweep_id_changed_version", "trials", ["sweep_id", "changed_version"])


def downgrade() -> None:
    # In place, not by a batch copy of the table: see 0002's downgrade (the copy would cascade to every point).
    op.drop_index("ix_trials_sweep_id_changed_version", table_name="trials")
    op.drop_column("trials", "changed_version")
