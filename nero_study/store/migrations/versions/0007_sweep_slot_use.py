"""sweeps.busy_slot_s and sweeps.slot_s: how busy the sweep kept its slots.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

``slot_s`` is the slot-seconds the sweep had (its slots, that is trials at once, times the time its trials ran)
and ``busy_slot_s`` those in which a slot was running one of its bundles; busy / available is the sweep's slot
utilisation. Both add up over a sweep's attempts. Sweeps stored before this revision (and sweeps that ran
nothing) have neither: null, shown as "not measured".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("busy_slot_s", sa.Double(), nullable=True))
    op.add_column("sweeps", sa.Column("slot_s", sa.Double(), nullable=True))


def downgrade() -> None:
    # In place, not by a batch copy of the table: see 0002's downgrade (the copy would cascade to every trial).
    op.drop_column("sweeps", "slot_s")
    op.drop_column("sweeps", "busy_slot_s")
