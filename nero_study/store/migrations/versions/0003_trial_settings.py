"""trials.settings: the optimiser settings each trial runs with, per network, as resolved when it is stored.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``hyperparameters`` keeps what the sweep's spec set explicitly; ``settings`` records what the trial's
optimiser is built with once the registry's preset and the task's own paper overrides are applied
(``nero_study.tasks.base.optimizer_settings``), e.g. ``{"model": {"betas": [0.9, 0.999], "eps": 1e-08}}``
or, for a GAN, one entry per network. Trials stored before this revision keep ``NULL``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "trials",
        sa.Column("settings", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    )


def downgrade() -> None:
    # In place, not by a batch copy of the table: see 0002's downgrade (the copy would cascade to curve points).
    op.drop_column("trials", "settings")
