"""sweeps.planned_trials: the trial count a sweep's spec plans, stored when it is submitted.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Listings of sweeps show progress as finished / planned; counting the plan means validating the spec
(building its optimisers' settings), about 2 ms per sweep, which a page of 20 sweeps paid on every cold
read. Sweeps stored before this revision keep ``NULL`` and are counted on read as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("planned_trials", sa.Integer(), nullable=True))


def downgrade() -> None:
    # In place (SQLite >= 3.35 drops a column without copying the table): a batch copy would drop the old
    # table, and with foreign keys on (they are, and the pragma cannot change inside the migration's
    # transaction) that drop deletes every trial and curve point by cascade.
    op.drop_column("sweeps", "planned_trials")
