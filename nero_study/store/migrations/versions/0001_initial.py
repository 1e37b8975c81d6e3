"""Initial schema: sweeps (the work queue), trials, metric_points, api_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Frozen copy of the schema at this revision: it does not import the models, so later model changes
cannot change what this migration creates. Float columns that may hold NaN/inf are plain double
precision; on SQLite the application writes NaN as the text 'NaN' (see nero_study.store.models).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SWEEP_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TRIAL_STATUSES = ("pending", "running", "succeeded", "diverged", "failed", "cancelled")


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _status_in(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", _timestamp(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("execution", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(_status_in(SWEEP_STATUSES), name=op.f("ck_sweeps_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_sweeps_idempotency_key")),
    )
    op.create_index("ix_sweeps_status_created_at", "sweeps", ["status", "created_at"])

    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sweep_id", sa.String(32), nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("optimizer", sa.String(100), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("lr", sa.Double(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("budget", sa.String(32), nullable=False),
        sa.Column("preset", sa.String(32), nullable=False),
        sa.Column("hyperparameters", _json(), nullable=False),
        sa.Column("task_options", _json(), nullable=False),
        sa.Column("params_key", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(16), server_default="grid", nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("metric", sa.Double(), nullable=True),
        sa.Column("best_metric", sa.Double(), nullable=True),
        sa.Column("initial_metric", sa.Double(), nullable=True),
        sa.Column("metric_name", sa.String(64), nullable=True),
        sa.Column("lower_is_better", sa.Boolean(), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("wall_s", sa.Double(), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.CheckConstraint(_status_in(TRIAL_STATUSES), name=op.f("ck_trials_status")),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name=op.f("fk_trials_sweep_id_sweeps"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trials")),
        sa.UniqueConstraint(
            "sweep_id",
            "task",
            "label",
            "lr",
            "seed",
            "params_key",
            name=op.f("uq_trials_sweep_id_task_label_lr_seed_params_key"),
        ),
    )
    op.create_index("ix_trials_sweep_id_status", "trials", ["sweep_id", "status"])
    # Trial listings page through one sweep in id order: this index keeps a page's cost flat at any offset.
    op.create_index("ix_trials_sweep_id_id", "trials", ["sweep_id", "id"])

    op.create_table(
        "metric_points",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name=op.f("fk_metric_points_trial_id_trials"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("trial_id", "step", "name", name=op.f("pk_metric_points")),
    )

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("last_used_at", _timestamp(), nullable=True),
        sa.Column("revoked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("metric_points")
    op.drop_index("ix_trials_sweep_id_id", table_name="trials")
    op.drop_index("ix_trials_sweep_id_status", table_name="trials")
    op.drop_table("trials")
    op.drop_index("ix_sweeps_status_created_at", table_name="sweeps")
    op.drop_table("sweeps")
