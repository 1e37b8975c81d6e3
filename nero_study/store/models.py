"""SQLAlchemy 2.0 models of the study store: sweeps (the work queue), trials, curve points, API tokens, workers.

The schema is created and changed only by the Alembic migrations in ``migrations/``; a test checks that
the migrated schema matches these models.

Two column types keep values faithful on both SQLite and PostgreSQL:

- :class:`FaithfulFloat` stores ``NaN``, ``+inf`` and ``-inf`` and gives them back (a diverged trial's
  metric is NaN or inf, and that is data). PostgreSQL's ``double precision`` holds all three natively.
  SQLite holds infinities but silently turns a bound NaN into NULL, so on SQLite a NaN is written as the
  text ``'NaN'`` (a REAL-affinity column keeps text that is not a number as text) and read back as a float
  NaN. Both databases then order NaN after every number, ``+inf`` included, so ``ORDER BY`` and
  comparisons agree between them; NULL still means "no value".
- :class:`UTCDateTime` always returns timezone-aware UTC datetimes (SQLite stores naive UTC text).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from nero_study.vocabulary import SWEEP_STATUSES, TRIAL_STATUSES

CURVE_NAMES: tuple[str, ...] = ("metric", "train_loss", "epoch")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def new_sweep_id() -> str:
    """A fresh sweep id: 32 hex characters of a random UUID."""
    return uuid.uuid4().hex


class _SQLiteDoubleAsIs(sa.Double):
    """SQLite's double without the driver-side ``float()`` conversion (which would turn 'NaN' into NULL)."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class FaithfulFloat(TypeDecorator[float]):
    """A double-precision float that keeps NaN, +inf and -inf on SQLite as well as PostgreSQL."""

    impl = sa.Double
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return _SQLiteDoubleAsIs()
        return dialect.type_descriptor(sa.Double())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = float(value)
        if dialect.name == "sqlite" and math.isnan(value):
            return "NaN"
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        if value is None:
            return None
        return float(value)  # float("NaN") for SQLite's text NaN

    def process_literal_param(self, value: Any, dialect: Dialect) -> str:
        return repr(self.process_bind_param(value, dialect))


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is written from and read back as a timezone-aware UTC datetime."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"Invalid datetime: {value!r}; the store needs timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (compact, comparable); plain JSON text elsewhere.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Sweep(Base):
    """One submitted sweep; the ``sweeps`` table is also the work queue that workers claim from."""

    __tablename__ = "sweeps"
    __table_args__ = (
        sa.CheckConstraint(_in("status", SWEEP_STATUSES), name="status"),
        sa.Index("ix_sweeps_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_sweep_id)
    name: Mapped[str] = mapped_column(sa.String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", server_default="queued")
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, onupdate=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    error: Mapped[str | None] = mapped_column(sa.Text)
    execution: Mapped[str | None] = mapped_column(sa.String(32))
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    #: Trials the spec plans, counted when the sweep is submitted (``None`` for sweeps stored before 0002).
    planned_trials: Mapped[int | None] = mapped_column(sa.Integer)
    #: Raised by one in the same transaction as every write that changes what the sweep shows (its status,
    #: its trials, their curves); the dashboards' ETags and caches are keyed on it. A lease renewal leaves it.
    version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    #: Raised (with ``version``) only by writes that change the sweep's trial rows, not by curve points.
    trials_version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    #: Slot-seconds in which a slot ran one of the sweep's bundles, and slot-seconds it had (slots times the
    #: time its trials ran), summed over its attempts; ``None`` until an attempt has run trials (and before 0007).
    busy_slot_s: Mapped[float | None] = mapped_column(sa.Double)
    slot_s: Mapped[float | None] = mapped_column(sa.Double)

    trials: Mapped[list[Trial]] = relationship(
        back_populates="sweep", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def slot_utilisation(self) -> float | None:
        """Busy slot-seconds over available slot-seconds (0..1); ``None`` when not measured."""
        if self.busy_slot_s is None or not self.slot_s:
            return None
        return min(1.0, self.busy_slot_s / self.slot_s)

    def __repr__(self) -> str:
        return f"Sweep(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class Trial(Base):
    """One training run of a sweep: (task, optimiser variant, lr, seed, settings) and its outcome.

    ``params_key`` is the SHA-256 hex digest of the canonical JSON of ``hyperparameters`` and
    ``task_options`` (see :func:`nero_study.store.repo.params_key`): the unique key then stays short
    however large the settings are. ``lr`` is in the optimiser's units; ``wall_s`` in seconds.
    """

    __tablename__ = "trials"
    __table_args__ = (
        sa.UniqueConstraint("sweep_id", "task", "label", "lr", "seed", "params_key"),
        sa.Index("ix_trials_sweep_id_status", "sweep_id", "status"),
        sa.Index("ix_trials_sweep_id_id", "sweep_id", "id"),
        sa.Index("ix_trials_sweep_id_changed_version", "sweep_id", "changed_version"),
        sa.CheckConstraint(_in("status", TRIAL_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[str] = mapped_column(sa.ForeignKey("sweeps.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(sa.String(100))
    optimizer: Mapped[str] = mapped_column(sa.String(100))
    label: Mapped[str] = mapped_column(sa.String(100))
    lr: Mapped[float] = mapped_column(sa.Double)
    seed: Mapped[int] = mapped_column(sa.Integer)
    budget: Mapped[str] = mapped_column(sa.String(32))
    preset: Mapped[str] = mapped_column(sa.String(32))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The optimiser settings per network the trial runs with (preset, task overrides, hyperparameters).
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    task_options: Mapped[dict[str, Any]] = mapped_column(JSONType)
    params_key: Mapped[str] = mapped_column(sa.String(64))
    phase: Mapped[str] = mapped_column(sa.String(16), default="grid", server_default="grid")
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", server_default="pending")
    metric: Mapped[float | None] = mapped_column(FaithfulFloat)
    best_metric: Mapped[float | None] = mapped_column(FaithfulFloat)
    initial_metric: Mapped[float | None] = mapped_column(FaithfulFloat)
    metric_name: Mapped[str | None] = mapped_column(sa.String(64))
    lower_is_better: Mapped[bool | None] = mapped_column(sa.Boolean)
    attempt: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    wall_s: Mapped[float | None] = mapped_column(sa.Double)
    device: Mapped[str | None] = mapped_column(sa.String(64))
    steps: Mapped[int | None] = mapped_column(sa.Integer)
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The sweep's ``trials_version`` made by the last write that changed this row (set in that write, from the
    #: sweep's row, which every such write locks first): a reader that has the sweep's trials as of version V
    #: reads only the rows with ``changed_version > V`` to have them as of now (:func:`repo.trials_frame`).
    changed_version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")

    sweep: Mapped[Sweep] = relationship(back_populates="trials")
    points: Mapped[list[MetricPoint]] = relationship(
        back_populates="trial", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return (
            f"Trial(id={self.id!r}, task={self.task!r}, label={self.label!r}, lr={self.lr!r}, "
            f"seed={self.seed!r}, status={self.status!r})"
        )


class MetricPoint(Base):
    """One value on a trial's learning curve: ``name`` is ``metric``, ``train_loss`` or ``epoch``."""

    __tablename__ = "metric_points"

    trial_id: Mapped[int] = mapped_column(sa.ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    value: Mapped[float | None] = mapped_column(FaithfulFloat)

    trial: Mapped[Trial] = relationship(back_populates="points")


class ApiToken(Base):
    """A bearer token for writes; only the SHA-256 hex digest of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())


class Worker(Base):
    """A sweep worker process as its heartbeat last wrote it; ``id`` is the lease owner name it claims with."""

    __tablename__ = "workers"
    __table_args__ = (sa.Index("ix_workers_last_seen", "last_seen"),)

    id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The sweep it is running, ``None`` while it waits for one.
    current_sweep: Mapped[str | None] = mapped_column(sa.String(32))
