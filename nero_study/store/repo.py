"""All reads and writes of the store, as keyword-only functions taking a :class:`~sqlalchemy.orm.Session`.

Routes and workers stay thin: they call these functions and never build queries themselves.

Transactions: every function runs in its own short transaction and sees the latest committed data. It
first ends any transaction the session has open (a SQLite reader otherwise keeps reading its old snapshot,
and a write after a read could fail with "database is locked"), and commits before it returns (or rolls
back and re-raises), so no connection is left idle in a transaction. Writes take the write lock at once
on SQLite (``BEGIN IMMEDIATE``). Returned objects stay readable (sessions from
:func:`nero_study.store.db.session_factory` do not expire them on commit). Callers therefore must not
keep changes of their own pending in a session they pass here: all writes go through these functions.

Writes are idempotent where a worker may repeat them after a crash or a retry: :func:`add_trials` inserts
only the trials that are missing (unique key ``(sweep_id, task, label, lr, seed, params_key)``),
:func:`add_metric_points` upserts on ``(trial_id, step, name)``, :func:`finish_trial` leaves a finished
trial alone, and results of a superseded attempt are ignored when the caller passes ``attempt``.

The queue: :func:`claim_next_sweep` hands each queued sweep (or a running one whose lease expired) to
exactly one worker; the worker keeps the lease alive with :func:`renew_lease` and ends it with
:func:`finish_sweep`. Times are timezone-aware UTC; ``lease_seconds`` are seconds. Functions that
compare against the clock take ``now`` so tests (and callers with a better clock) can pass it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nero_study.store.db import BEGIN_IMMEDIATE
from nero_study.store.models import (
    CURVE_NAMES,
    ApiToken,
    MetricPoint,
    Sweep,
    Trial,
    UTCDateTime,
    Worker,
    utc_now,
)
from nero_study.vocabulary import (
    PHASES,
    SWEEP_ACTIVE,
    SWEEP_FINISHED,
    TRIAL_ENDED,
    TRIAL_FINISHED,
    TRIAL_STATUSES,
    is_phase,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

TRIAL_FRAME_COLUMNS: tuple[str, ...] = (
    "id",
    "sweep_id",
    "task",
    "optimizer",
    "label",
    "lr",
    "seed",
    "budget",
    "preset",
    "phase",
    "status",
    "metric",
    "best_metric",
    "initial_metric",
    "metric_name",
    "lower_is_better",
    "attempt",
    "wall_s",
    "device",
    "steps",
    "error",
    "hyperparameters",
    "task_options",
    "params_key",
    "created_at",
    "started_at",
    "finished_at",
)
_TRIAL_KEY_COLUMNS = ("sweep_id", "task", "label", "lr", "seed", "params_key")


class IdempotencyKeyReused(ValueError):
    """An idempotency key was sent again with a different sweep; the existing sweep is attached."""

    def __init__(self, key: str, existing: Sweep) -> None:
        super().__init__(
            f"Idempotency key {key!r} was already used for sweep {existing.id} with a different name or spec"
        )
        self.key = key
        self.existing = existing


# --------------------------------------------------------------------------------------------- helpers

#: How often a write is tried when the database fails transiently, and the first wait between tries (s); the
#: wait doubles each time: 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 s of waiting at most before the error is raised.
WRITE_ATTEMPTS = 6
WRITE_FIRST_BACKOFF_S = 0.1

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass if the write is tried again: an ``OperationalError`` (SQLite's disk
    I/O error or lock timeout, a PostgreSQL connection lost or a server shutting down) or a dropped connection.
    Integrity and programming errors are not: trying again cannot help."""
    return isinstance(exc, sa.exc.OperationalError) or (
        isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)
    )


def retried(function: _Fn) -> _Fn:
    """Run a write again after a transient database error (:func:`is_transient`), up to
    :data:`WRITE_ATTEMPTS` times with doubling waits; then the error is raised. Safe because each write runs in
    one transaction that a failure rolls back, and the writes a worker repeats are idempotent (module doc)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        wait = WRITE_FIRST_BACKOFF_S
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return function(*args, **kwargs)
            except sa.exc.DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS or not is_transient(exc):
                    raise
                logger.warning(
                    "%s: transient database error (%s), try %d of %d in %.1f s",
                    function.__name__, type(exc.orig).__name__, attempt + 1, WRITE_ATTEMPTS, wait,
                )
                time.sleep(wait)  # backoff between tries of a failed write, not a synchronisation
                wait *= 2
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


@contextmanager
def _transaction(session: Session, *, write: bool) -> Iterator[None]:
    """One short transaction: end any open one, (for writes) take the SQLite write lock first, commit."""
    if session.in_transaction():
        session.commit()
    if write:
        session.connection(execution_options={BEGIN_IMMEDIATE: True})
    try:
        yield
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _write(session: Session) -> Any:
    return _transaction(session, write=True)


def _read(session: Session) -> Any:
    return _transaction(session, write=False)


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT (with ``on_conflict_*``) for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _utc(value: datetime) -> Any:
    """A bound timestamp typed as the store's timestamps (so SQLite compares like with like)."""
    return sa.literal(value, UTCDateTime())


def _lock_sweep(session: Session, sweep_id: str) -> None:
    """Lock the sweep's row first in a write that changes its trials (PostgreSQL; SQLite's write lock is taken).

    Every write that changes a sweep's trials raises the sweep's ``version`` in the same transaction; taking
    the sweep's row before any trial row keeps one lock order for all of them (no deadlock with a cancel,
    which updates the sweep and then its trials).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(Sweep.id).where(Sweep.id == sweep_id).with_for_update())


def _bump_version(session: Session, sweep_id: str, *, trials: bool) -> None:
    """Raise the sweep's ``version`` by one: something it shows changed in this transaction; ``trials``: its
    trial rows changed (not only curve points), so ``trials_version`` rises too."""
    values: dict[str, Any] = {"version": Sweep.version + 1}
    if trials:
        values["trials_version"] = Sweep.trials_version + 1
    session.execute(
        sa.update(Sweep).where(Sweep.id == sweep_id).values(**values).execution_options(synchronize_session=False)
    )


def _stamp() -> dict[str, Any]:
    """The values that mark the trial rows an UPDATE changes with the ``trials_version`` this write makes: one
    more than the sweep's (read from its row in the statement). Every UPDATE of trial rows includes it and is
    followed in its transaction by :func:`_bump_version` with ``trials=True`` (see ``Trial.changed_version``)."""
    next_version = sa.select(Sweep.trials_version + 1).where(Sweep.id == Trial.sweep_id).scalar_subquery()
    return {"changed_version": next_version}


def _sweep_of_trial(session: Session, trial_id: int) -> str | None:
    return session.scalar(sa.select(Trial.sweep_id).where(Trial.id == trial_id))


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def params_key(hyperparameters: Mapping[str, Any] | None, task_options: Mapping[str, Any] | None) -> str:
    """SHA-256 hex of the canonical JSON of a trial's settings: part of the trial's unique key.

    Keys are sorted, so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` give the same key; ``1`` and
    ``1.0`` are different values (as in JSON).
    """
    payload = {"hyperparameters": dict(hyperparameters or {}), "task_options": dict(task_options or {})}
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a bearer token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- sweeps


@retried
def create_sweep(
    session: Session,
    *,
    spec: Mapping[str, Any],
    name: str,
    idempotency_key: str | None = None,
    planned_trials: int | None = None,
) -> tuple[Sweep, bool]:
    """Queue a new sweep, or find the sweep already created with the same ``idempotency_key``.

    Returns the sweep and whether this call created it (``False``: an idempotent replay). ``planned_trials``:
    the number of trials the spec plans (``SweepSpec.trial_count()``), kept so that listings show progress
    without validating every spec again. Raises :class:`IdempotencyKeyReused` when the key exists with a
    different name or spec. Callers with a validated spec use ``nero_study.study.queue.queue_sweep``.
    """
    spec = dict(spec)

    def existing_for_key() -> Sweep | None:
        if idempotency_key is None:
            return None
        with _read(session):
            query = sa.select(Sweep).where(Sweep.idempotency_key == idempotency_key)
            existing = session.scalars(query).first()
        if existing is not None and (existing.name != name or _canonical_json(existing.spec) != _canonical_json(spec)):
            raise IdempotencyKeyReused(idempotency_key, existing)
        return existing

    found = existing_for_key()
    if found is not None:
        return found, False
    sweep = Sweep(name=name, spec=spec, idempotency_key=idempotency_key, status="queued", planned_trials=planned_trials)
    try:
        with _write(session):
            session.add(sweep)
    except IntegrityError:
        found = existing_for_key()  # another request with the same key won the race
        if found is None:
            raise
        return found, False
    return sweep, True


def get_sweep(session: Session, *, sweep_id: str) -> Sweep | None:
    """The sweep with this id, read fresh from the database, or ``None``."""
    with _read(session):
        sweep = session.get(Sweep, sweep_id, populate_existing=True)
    return sweep


def list_sweeps(
    session: Session, *, status: str | Sequence[str] | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, and the total number matching ``status``."""
    condition = sa.true()
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        condition = Sweep.status.in_(statuses)
    query = (
        sa.select(Sweep)
        .where(condition)
        .order_by(Sweep.created_at.desc(), Sweep.id)
        .offset(offset)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    with _read(session):
        total = session.scalar(sa.select(sa.func.count()).select_from(Sweep).where(condition)) or 0
        items = list(session.scalars(query))
    return items, total


def get_sweep_version(session: Session, *, sweep_id: str) -> int | None:
    """The sweep's change counter (``Sweep.version``), or ``None`` for an unknown id: one indexed read.

    It is raised in the same transaction as every write that changes what the sweep shows, so two reads
    that give the same number saw the same sweep, trials and curves.
    """
    with _read(session):
        return session.scalar(sa.select(Sweep.version).where(Sweep.id == sweep_id))


def sweep_versions(session: Session, *, status: Sequence[str]) -> list[tuple[str, int]]:
    """(id, ``Sweep.version``) of every sweep in one of ``status``, by id: one query over the status index.

    What a view of many sweeps is keyed on (``/findings``): while these pairs hold, nothing it shows changed.
    """
    query = sa.select(Sweep.id, Sweep.version).where(Sweep.status.in_(list(status))).order_by(Sweep.id)
    with _read(session):
        return [(sweep_id, int(version or 0)) for sweep_id, version in session.execute(query).all()]


def sweep_counts(session: Session, *, sweep_id: str) -> dict[str, int]:
    """Number of the sweep's trials in each trial status (every status present, zero included)."""
    counts = dict.fromkeys(TRIAL_STATUSES, 0)
    query = sa.select(Trial.status, sa.func.count()).where(Trial.sweep_id == sweep_id).group_by(Trial.status)
    with _read(session):
        rows = session.execute(query).all()
    for status, count in rows:
        counts[status] = count
    return counts


def sweep_counts_many(session: Session, *, sweep_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Trial counts by status for several sweeps in one query (a sweep listing's progress bars)."""
    counts = {sweep_id: dict.fromkeys(TRIAL_STATUSES, 0) for sweep_id in sweep_ids}
    if not counts:
        return counts
    query = (
        sa.select(Trial.sweep_id, Trial.status, sa.func.count())
        .where(Trial.sweep_id.in_(list(counts)))
        .group_by(Trial.sweep_id, Trial.status)
    )
    with _read(session):
        rows = session.execute(query).all()
    for sweep_id, status, count in rows:
        counts[sweep_id][status] = count
    return counts


@retried
def claim_next_sweep(
    session: Session,
    *,
    owner: str,
    lease_seconds: float,
    execution: str | None = None,
    now: datetime | None = None,
) -> Sweep | None:
    """Atomically take the oldest queued sweep, or a running one whose lease expired, for ``owner``.

    Each sweep goes to exactly one claimer however many workers call this at once: one guarded
    ``UPDATE ... WHERE id = (oldest claimable) AND claimable RETURNING id``. On PostgreSQL the inner
    SELECT is ``FOR UPDATE SKIP LOCKED`` (concurrent claimers take different sweeps); on SQLite the
    write lock taken first serialises claimers. The claimed sweep is ``running``, its ``attempts``
    is one higher (use it as the trials' ``attempt``), and its lease lasts ``lease_seconds``.
    """
    now = now or utc_now()
    claimable = sa.or_(
        Sweep.status == "queued",
        sa.and_(Sweep.status == "running", Sweep.lease_expires_at < _utc(now)),
    )
    with _write(session):
        candidate = sa.select(Sweep.id).where(claimable).order_by(Sweep.created_at, Sweep.id).limit(1)
        if session.get_bind().dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        values: dict[str, Any] = {
            "status": "running",
            "lease_owner": owner,
            "lease_expires_at": now + timedelta(seconds=lease_seconds),
            "attempts": Sweep.attempts + 1,
            "started_at": sa.func.coalesce(Sweep.started_at, _utc(now)),
            "updated_at": now,
            "version": Sweep.version + 1,
        }
        if execution is not None:
            values["execution"] = execution
        statement = (
            sa.update(Sweep)
            .where(Sweep.id == candidate.scalar_subquery(), claimable)
            .values(**values)
            .returning(Sweep.id)
            .execution_options(synchronize_session=False)
        )
        claimed_id = session.execute(statement).scalar_one_or_none()
        if claimed_id is None:
            return None
        return session.get(Sweep, claimed_id, populate_existing=True)


@retried
def claim_sweep(
    session: Session,
    *,
    sweep_id: str,
    owner: str,
    lease_seconds: float,
    take_over_from: str | None = None,
    now: datetime | None = None,
) -> Sweep | None:
    """Take one named sweep for ``owner`` (the CLI running a sweep in the foreground); ``None`` if refused.

    Claimable: queued, failed or cancelled (the user asked to run it again: finished trials are kept),
    running with an expired lease, or running under ``take_over_from`` (an owner known to be dead).
    A cancel request left on the sweep is cleared. ``attempts`` goes up by one, as in
    :func:`claim_next_sweep`.
    """
    now = now or utc_now()
    claimable = sa.or_(
        Sweep.status.in_(("queued", "failed", "cancelled")),
        sa.and_(Sweep.status == "running", Sweep.lease_expires_at < _utc(now)),
        sa.and_(Sweep.status == "running", Sweep.lease_owner == take_over_from)
        if take_over_from is not None
        else sa.false(),
    )
    with _write(session):
        claimed_id = session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, claimable)
            .values(
                status="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=Sweep.attempts + 1,
                started_at=sa.func.coalesce(Sweep.started_at, _utc(now)),
                finished_at=None,
                cancel_requested=False,
                error=None,
                updated_at=now,
                version=Sweep.version + 1,
            )
            .returning(Sweep.id)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if claimed_id is None:
            return None
        return session.get(Sweep, claimed_id, populate_existing=True)


@retried
def renew_lease(
    session: Session, *, sweep_id: str, owner: str, lease_seconds: float, now: datetime | None = None
) -> bool:
    """Extend ``owner``'s lease to ``now + lease_seconds``; ``False`` when the lease was lost.

    The lease is lost when another worker took the sweep over or the sweep is no longer running.
    """
    now = now or utc_now()
    with _write(session):
        result = session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.lease_owner == owner, Sweep.status == "running")
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount == 1


@retried
def finish_sweep(
    session: Session,
    *,
    sweep_id: str,
    owner: str,
    status: str,
    error: str | None = None,
    execution: str | None = None,
    slot_use: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> bool:
    """End ``owner``'s run of the sweep with ``status`` (succeeded/failed/cancelled) and release the lease.

    ``slot_use``: (busy slot-seconds, available slot-seconds) of this run, added to the sweep's (see
    :attr:`Sweep.slot_utilisation`).

    ``succeeded`` is stored as ``trials_failed`` when any of the sweep's trials failed (the error then says how
    many), so a sweep never says plain ``succeeded`` about failed work. A ``failed`` sweep's pending and running
    trials become ``cancelled``. Returns ``False`` (and changes nothing) when ``owner`` no longer holds the sweep.
    """
    if status not in SWEEP_FINISHED:
        raise ValueError(f"Invalid sweep status: {status!r}; valid: {', '.join(SWEEP_FINISHED)}")
    now = now or utc_now()
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": now,
        "lease_expires_at": None,
        "updated_at": now,
        "version": Sweep.version + 1,
    }
    if execution is not None:
        values["execution"] = execution
    values.update(_slot_use_values(slot_use))
    with _write(session):
        if status == "succeeded":
            failed = session.scalar(
                sa.select(sa.func.count()).where(Trial.sweep_id == sweep_id, Trial.status == "failed")
            )
            if failed:
                values["status"] = "trials_failed"
                values["error"] = error or f"{failed} trial(s) failed; see each trial's error"
        result = session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.lease_owner == owner, Sweep.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1 and status == "failed" and _cancel_pending(session, sweep_id=sweep_id, now=now):
            # A failed sweep runs nothing more: its unfinished trials say so instead of waiting as pending/running
            # (running the sweep again runs them).
            _bump_version(session, sweep_id, trials=True)
    return result.rowcount == 1


def _slot_use_values(slot_use: tuple[float, float] | None) -> dict[str, Any]:
    """The sweep columns that add one run's (busy, available) slot-seconds to what is stored."""
    if slot_use is None:
        return {}
    busy, available = slot_use
    if not (math.isfinite(busy) and math.isfinite(available)) or busy < 0 or available <= 0:
        return {}
    return {
        "busy_slot_s": sa.func.coalesce(Sweep.busy_slot_s, 0.0) + busy,
        "slot_s": sa.func.coalesce(Sweep.slot_s, 0.0) + available,
    }


@retried
def release_sweep(
    session: Session,
    *,
    sweep_id: str,
    owner: str,
    slot_use: tuple[float, float] | None = None,
    now: datetime | None = None,
) -> bool:
    """Put a running sweep back in the queue at once (a worker shutting down, or its Ray cluster gone); keeps its
    finished trials. Trials it was running when it let go wait as ``pending`` again (a queued sweep runs nothing),
    and run afresh when a worker takes the sweep up. ``slot_use`` as in :func:`finish_sweep`."""
    now = now or utc_now()
    values: dict[str, Any] = {
        "status": "queued",
        "lease_owner": None,
        "lease_expires_at": None,
        "updated_at": now,
        "version": Sweep.version + 1,
        **_slot_use_values(slot_use),
    }
    with _write(session):
        result = session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.lease_owner == owner, Sweep.status == "running")
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            interrupted = session.execute(
                sa.update(Trial)
                .where(Trial.sweep_id == sweep_id, Trial.status == "running")
                .values(status="pending", started_at=None, **_stamp())
                .execution_options(synchronize_session=False)
            )
            if interrupted.rowcount:
                _bump_version(session, sweep_id, trials=True)
    return result.rowcount == 1


@retried
def request_cancel(session: Session, *, sweep_id: str, now: datetime | None = None) -> Sweep | None:
    """Ask for a sweep to stop; ``None`` if there is no such sweep.

    A queued sweep is cancelled at once (with its pending trials), and so is a running one whose lease has
    expired (its worker is gone: no one would see the request until another worker claimed it); its pending
    and running trials become ``cancelled``. A running sweep with a live lease gets ``cancel_requested``; its
    worker sees that through :func:`is_cancel_requested`, calls :func:`cancel_pending_trials` and finishes the
    sweep as ``cancelled``. A finished sweep is unchanged.
    """
    now = now or utc_now()
    nobody_runs_it = sa.or_(
        Sweep.status == "queued",
        sa.and_(Sweep.status == "running", Sweep.lease_expires_at < _utc(now)),
    )
    with _write(session):
        _lock_sweep(session, sweep_id)
        session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status.in_(SWEEP_ACTIVE))
            .values(
                cancel_requested=True,
                updated_at=now,
                version=Sweep.version + sa.case((Sweep.cancel_requested.is_(True), 0), else_=1),
            )
            .execution_options(synchronize_session=False)
        )
        cancelled_now = session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id, nobody_runs_it)
            .values(
                status="cancelled",
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                version=Sweep.version + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if cancelled_now.rowcount == 1 and _cancel_pending(session, sweep_id=sweep_id, now=now):
            _bump_version(session, sweep_id, trials=True)
        return session.get(Sweep, sweep_id, populate_existing=True)


def is_cancel_requested(session: Session, *, sweep_id: str) -> bool:
    """Whether the sweep should stop: cancel was requested, or the sweep no longer exists."""
    with _read(session):
        requested = session.scalar(sa.select(Sweep.cancel_requested).where(Sweep.id == sweep_id))
    return True if requested is None else bool(requested)


# ---------------------------------------------------------------------------------------------- trials


def resolved_trial_settings(
    task: str, optimizer: str, preset: str, hyperparameters: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The optimiser settings per network a trial of these will run with, as JSON values, from the one
    resolution the trial runner uses (:func:`nero_study.tasks.base.optimizer_settings`); ``None`` when the
    task or optimiser is not one this installation can build (the row is still stored)."""
    from nero_study.tasks.base import optimizer_settings, settings_as_json
    from nero_study.tasks.registry import get_task

    try:
        return settings_as_json(optimizer_settings(get_task(task), optimizer, preset, hyperparameters))
    except ValueError:
        return None


def _trial_row(sweep_id: str, item: Any) -> dict[str, Any]:
    data = dict(item) if isinstance(item, Mapping) else {**item.to_dict(), "phase": _field(item, "phase")}
    phase = data.get("phase") or "grid"
    if not is_phase(phase):
        raise ValueError(f"Invalid trial phase: {phase!r}; valid: {', '.join(PHASES)}, or bracket-N (a round)")
    hyperparameters = dict(data.get("hyperparameters") or {})
    task_options = dict(data.get("task_options") or {})
    preset = data.get("preset", "paper")
    settings = data.get("settings")
    if settings is None:
        settings = resolved_trial_settings(data["task"], data["optimizer"], preset, hyperparameters)
    return {
        "sweep_id": sweep_id,
        "task": data["task"],
        "optimizer": data["optimizer"],
        "label": data.get("label") or data["optimizer"],
        "lr": float(data["lr"]),
        "seed": int(data.get("seed", 0)),
        "budget": data.get("budget", "proxy"),
        "preset": preset,
        "hyperparameters": hyperparameters,
        "settings": settings,
        "task_options": task_options,
        "params_key": params_key(hyperparameters, task_options),
        "phase": phase,
        "device": data.get("device"),
        "status": "pending",
    }


def _trial_key(row: Mapping[str, Any] | Trial) -> tuple[Any, ...]:
    return tuple(_field(row, name) for name in _TRIAL_KEY_COLUMNS)


@retried
def add_trials(session: Session, *, sweep_id: str, trials: Iterable[Any]) -> list[Trial]:
    """Insert the sweep's trials that are not stored yet; return the stored rows for all of them.

    Each item is a mapping like ``TrialSpec.to_dict()`` plus ``phase`` (``grid``, ``seeds``, ``tpe`` or
    ``bracket-N``; default ``grid``), or an object with ``to_dict()`` (and optionally ``phase``). Calling this again
    with the same trials inserts nothing and returns the same rows, in input order, without duplicates.
    """
    rows = [_trial_row(sweep_id, item) for item in trials]
    if not rows:
        return []
    with _write(session):
        _lock_sweep(session, sweep_id)
        count = sa.select(sa.func.count()).select_from(Trial).where(Trial.sweep_id == sweep_id)
        before = session.scalar(count) or 0
        # New rows carry the version this write makes (an insert of none but known rows makes none).
        stamp = (session.scalar(sa.select(Sweep.trials_version).where(Sweep.id == sweep_id)) or 0) + 1
        statement = _insert(session, Trial).on_conflict_do_nothing(index_elements=list(_TRIAL_KEY_COLUMNS))
        session.execute(statement, [{**row, "changed_version": stamp} for row in rows])
        stored = session.scalars(
            sa.select(Trial).where(Trial.sweep_id == sweep_id).execution_options(populate_existing=True)
        ).all()
        if len(stored) != before:
            _bump_version(session, sweep_id, trials=True)
    by_key = {_trial_key(trial): trial for trial in stored}
    ordered: dict[tuple[Any, ...], Trial] = {}
    for row in rows:
        key = _trial_key(row)
        ordered.setdefault(key, by_key[key])
    return list(ordered.values())


@retried
def set_planned_trials(session: Session, *, sweep_id: str, planned: int) -> None:
    """Store how many trials the sweep runs once that is known better than at submission: a ``bracket`` sweep
    is submitted with its worst case and stores what it ran once it has stopped adding rounds."""
    with _write(session):
        session.execute(
            sa.update(Sweep)
            .where(Sweep.id == sweep_id)
            .values(planned_trials=int(planned))
            .execution_options(synchronize_session=False)
        )
        _bump_version(session, sweep_id, trials=False)


@retried
def import_sweep(
    session: Session,
    *,
    name: str,
    spec: Mapping[str, Any],
    trials: Sequence[Mapping[str, Any]],
    curves: Sequence[Iterable[Any]] = (),
) -> Sweep:
    """Store results computed elsewhere as one finished (``succeeded``) sweep, in one transaction: all of it or
    nothing. ``trials``: mappings like ``TrialSpec.to_dict()`` plus the outcome (``status`` succeeded, diverged
    or failed, ``metric``, ``initial_metric``, ``metric_name``, ``lower_is_better``, ``error``); ``curves``:
    each trial's learning-curve points (step, metric, ...), in the same order, or empty."""
    if not trials:
        raise ValueError("An imported sweep needs at least one trial")
    for item in trials:
        if item.get("status") not in TRIAL_FINISHED:
            raise ValueError(
                f"Invalid imported trial status: {item.get('status')!r}; valid: {', '.join(TRIAL_FINISHED)}"
            )
    now = utc_now()
    with _write(session):
        sweep = Sweep(
            name=name,
            spec=dict(spec),
            status="succeeded",
            started_at=now,
            finished_at=now,
            planned_trials=len(trials),
            execution="imported",
        )
        session.add(sweep)
        session.flush()
        stored = []
        for item in trials:
            row = _trial_row(sweep.id, item)
            row.update(
                status=item["status"],
                metric=item.get("metric"),
                best_metric=item.get("metric"),
                initial_metric=item.get("initial_metric"),
                metric_name=item.get("metric_name"),
                lower_is_better=item.get("lower_is_better"),
                error=item.get("error"),
                started_at=now,
                finished_at=now,
            )
            trial = Trial(**row)
            session.add(trial)
            stored.append(trial)
        session.flush()
        for trial, points in zip(stored, curves, strict=False):
            _upsert_points(session, _point_rows(trial.id, points))
    return sweep


def get_trial(session: Session, *, trial_id: int) -> Trial | None:
    """The trial with this id, read fresh from the database, or ``None``."""
    with _read(session):
        trial = session.get(Trial, trial_id, populate_existing=True)
    return trial


def mean_trial_seconds(session: Session, *, tasks: Sequence[str], budget: str) -> dict[str, float]:
    """Mean wall time of the ``succeeded`` trials of each of ``tasks`` at ``budget``, over every sweep stored (what
    the scheduler orders bundles by); tasks with no such trial are absent."""
    if not tasks:
        return {}
    query = (
        sa.select(Trial.task, sa.func.avg(Trial.wall_s))
        .where(
            Trial.task.in_(list(tasks)),
            Trial.budget == budget,
            Trial.status == "succeeded",
            Trial.wall_s.is_not(None),
        )
        .group_by(Trial.task)
    )
    with _read(session):
        rows = session.execute(query).all()
    return {task: float(mean) for task, mean in rows if mean is not None and math.isfinite(mean) and mean > 0}


def pending_trials(session: Session, *, sweep_id: str) -> list[Trial]:
    """The sweep's trials without a result (pending, running or cancelled), by id: what is left to run.

    ``running`` trials are included because after a crash nobody is running them any more.
    """
    query = (
        sa.select(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status.not_in(TRIAL_FINISHED))
        .order_by(Trial.id)
        .execution_options(populate_existing=True)
    )
    with _read(session):
        trials = list(session.scalars(query))
    return trials


def _trial_filters(
    sweep_id: str,
    status: str | Sequence[str] | None,
    task: str | None,
    optimizer: str | None,
    label: str | None,
) -> list[Any]:
    conditions = [Trial.sweep_id == sweep_id]
    if status is not None:
        conditions.append(Trial.status.in_([status] if isinstance(status, str) else list(status)))
    if task is not None:
        conditions.append(Trial.task == task)
    if optimizer is not None:
        conditions.append(Trial.optimizer == optimizer)
    if label is not None:
        conditions.append(Trial.label == label)
    return conditions


def list_trials(
    session: Session,
    *,
    sweep_id: str,
    status: str | Sequence[str] | None = None,
    task: str | None = None,
    optimizer: str | None = None,
    label: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[Trial], int]:
    """A page of the sweep's trials (by id) matching the filters, and the total number that match."""
    conditions = _trial_filters(sweep_id, status, task, optimizer, label)
    query = (
        sa.select(Trial)
        .where(*conditions)
        .order_by(Trial.id)
        .offset(offset)
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    with _read(session):
        total = session.scalar(sa.select(sa.func.count()).select_from(Trial).where(*conditions)) or 0
        items = list(session.scalars(query))
    return items, total


def trial_rows(
    session: Session,
    *,
    sweep_id: str,
    status: str | Sequence[str] | None = None,
    task: str | None = None,
    optimizer: str | None = None,
    label: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    """:func:`list_trials` as plain dicts of column values, for read-only listings (the API's pages).

    The same page and total without building ORM objects, which cost more than the query for a page of 100.
    """
    conditions = _trial_filters(sweep_id, status, task, optimizer, label)
    table = Trial.__table__
    query = sa.select(table).where(*conditions).order_by(table.c.id).offset(offset).limit(limit)
    with _read(session):
        total = session.scalar(sa.select(sa.func.count()).select_from(table).where(*conditions)) or 0
        result = session.execute(query)
        keys = list(result.keys())
        rows = [dict(zip(keys, row, strict=True)) for row in result]
    return rows, total


@retried
def mark_trial_running(session: Session, *, trial_id: int, attempt: int, now: datetime | None = None) -> bool:
    """Mark a trial as started by claim number ``attempt`` (the sweep's ``attempts``); ``False`` if refused.

    Starting a trial again (a new attempt, or a re-run after it was cancelled) clears its old curve
    and result. Repeating the call for a trial already running under the same attempt changes nothing
    and returns ``True``. A trial with a result, or one taken by a newer attempt, is refused.
    """
    now = now or utc_now()
    fresh_start = sa.or_(Trial.attempt < attempt, sa.and_(Trial.attempt == attempt, Trial.status != "running"))
    with _write(session):
        sweep_id = _sweep_of_trial(session, trial_id)
        if sweep_id is not None:
            _lock_sweep(session, sweep_id)
        result = session.execute(
            sa.update(Trial)
            .where(Trial.id == trial_id, Trial.status.not_in(TRIAL_FINISHED), fresh_start)
            .values(
                status="running",
                attempt=attempt,
                started_at=now,
                finished_at=None,
                error=None,
                metric=None,
                best_metric=None,
                wall_s=None,
                steps=None,
                **_stamp(),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            session.execute(sa.delete(MetricPoint).where(MetricPoint.trial_id == trial_id))
            _bump_version(session, str(sweep_id), trials=True)
            return True
        current = session.execute(sa.select(Trial.status, Trial.attempt).where(Trial.id == trial_id)).one_or_none()
    return current is not None and current.status == "running" and current.attempt == attempt


def _point_rows(trial_id: int, points: Iterable[Any]) -> list[dict[str, Any]]:
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for point in points:
        step = int(_field(point, "step"))
        for name in CURVE_NAMES:
            value = _field(point, name)
            if value is not None:
                rows[(step, name)] = {"trial_id": trial_id, "step": step, "name": name, "value": float(value)}
    return list(rows.values())


def _upsert_points(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _insert(session, MetricPoint)
    statement = statement.on_conflict_do_update(
        index_elements=["trial_id", "step", "name"], set_={"value": statement.excluded.value}
    )
    session.execute(statement, rows)


@retried
def add_metric_points(session: Session, *, trial_id: int, points: Iterable[Any], attempt: int | None = None) -> int:
    """Store learning-curve points (``EvalPoint`` objects or mappings with step, epoch, train_loss, metric).

    Each point becomes values named ``metric``, ``train_loss`` and ``epoch`` at its ``step``; writing the
    same step again replaces the values (idempotent). With ``attempt``, points from any other attempt
    than the trial's current one are ignored. Returns the number of values written.
    """
    rows = _point_rows(trial_id, points)
    with _write(session):
        found = session.execute(sa.select(Trial.sweep_id, Trial.attempt).where(Trial.id == trial_id)).one_or_none()
        if attempt is not None and (found is None or found.attempt != attempt):
            return 0
        if found is not None and rows:
            _lock_sweep(session, found.sweep_id)
        _upsert_points(session, rows)
        if found is not None and rows:
            _bump_version(session, found.sweep_id, trials=False)
    return len(rows)


@retried
def finish_trial(
    session: Session,
    *,
    trial_id: int,
    status: str,
    metric: float | None = None,
    best_metric: float | None = None,
    initial_metric: float | None = None,
    metric_name: str | None = None,
    lower_is_better: bool | None = None,
    wall_s: float | None = None,
    device: str | None = None,
    steps: int | None = None,
    error: str | None = None,
    attempt: int | None = None,
    curve: Iterable[Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Record a trial's outcome (and optionally its whole ``curve``); ``False`` if it was not applied.

    Not applied when the trial already has a result (succeeded/diverged/failed): finishing twice never
    counts twice. With ``attempt``, a result from an attempt older than the trial's current one is
    ignored too (a worker that lost its lease). ``wall_s`` is in seconds.
    """
    if status not in TRIAL_ENDED:
        raise ValueError(f"Invalid trial status: {status!r}; valid: {', '.join(TRIAL_ENDED)}")
    now = now or utc_now()
    conditions = [Trial.id == trial_id, Trial.status.not_in(TRIAL_FINISHED)]
    values: dict[str, Any] = {
        "status": status,
        "metric": metric,
        "best_metric": best_metric,
        "metric_name": metric_name,
        "lower_is_better": lower_is_better,
        "wall_s": wall_s,
        "steps": steps,
        "error": error,
        "finished_at": now,
    }
    if initial_metric is not None:
        values["initial_metric"] = initial_metric
    if device is not None:
        values["device"] = device
    if attempt is not None:
        conditions.append(Trial.attempt <= attempt)
        values["attempt"] = attempt
    with _write(session):
        sweep_id = _sweep_of_trial(session, trial_id)
        if sweep_id is not None:
            _lock_sweep(session, sweep_id)
        result = session.execute(
            sa.update(Trial)
            .where(*conditions)
            .values(**values, **_stamp())
            .execution_options(synchronize_session=False)
        )
        applied = result.rowcount == 1
        if applied and curve is not None:
            _upsert_points(session, _point_rows(trial_id, curve))
        if applied:
            _bump_version(session, str(sweep_id), trials=True)
    return applied


@retried
def record_trial_result(
    session: Session, *, trial_id: int, result: Any, attempt: int | None = None, now: datetime | None = None
) -> bool:
    """:func:`finish_trial` from a :class:`~nero_study.tasks.base.TrialResult` (curve included)."""
    return finish_trial(
        session,
        trial_id=trial_id,
        status=result.status,
        metric=result.metric,
        best_metric=result.best_metric,
        initial_metric=result.initial_metric,
        metric_name=result.metric_name,
        lower_is_better=result.lower_is_better,
        wall_s=result.wall_s,
        device=result.device,
        steps=result.steps,
        error=result.error,
        attempt=attempt,
        curve=result.curve,
        now=now,
    )


def _cancel_pending(session: Session, *, sweep_id: str, now: datetime) -> int:
    result = session.execute(
        sa.update(Trial)
        .where(Trial.sweep_id == sweep_id, Trial.status.in_(("pending", "running")))
        .values(status="cancelled", finished_at=now, **_stamp())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


@retried
def cancel_pending_trials(session: Session, *, sweep_id: str, now: datetime | None = None) -> int:
    """Mark the sweep's pending and running trials ``cancelled``; returns how many. Results are kept."""
    with _write(session):
        _lock_sweep(session, sweep_id)
        count = _cancel_pending(session, sweep_id=sweep_id, now=now or utc_now())
        if count:
            _bump_version(session, sweep_id, trials=True)
    return count


def trial_curve(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    """A trial's learning curve by step: dicts with ``step``, ``epoch``, ``train_loss``, ``metric``.

    A value never reported is ``None``; NaN and infinities come back as stored.
    """
    with _read(session):
        return _curve(session, trial_id=trial_id)


def _curve(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        sa.select(MetricPoint.step, MetricPoint.name, MetricPoint.value)
        .where(MetricPoint.trial_id == trial_id)
        .order_by(MetricPoint.step, MetricPoint.name)
    )
    by_step: dict[int, dict[str, Any]] = {}
    for step, name, value in rows:
        point = by_step.setdefault(step, {"step": step, **dict.fromkeys(CURVE_NAMES[::-1])})
        point[name] = value
    return list(by_step.values())


def get_trial_with_curve(session: Session, *, trial_id: int) -> tuple[Trial, list[dict[str, Any]]] | None:
    """The trial and its learning curve (see :func:`trial_curve`), or ``None`` if there is no such trial."""
    with _read(session):
        trial = session.get(Trial, trial_id, populate_existing=True)
        if trial is None:
            return None
        return trial, _curve(session, trial_id=trial_id)


def trials_frame(
    session: Session, *, sweep_id: str, previous: pd.DataFrame | None = None, as_of: int | None = None
) -> pd.DataFrame:
    """The sweep's trials as a pandas DataFrame (one row per trial, ordered by id, columns
    :data:`TRIAL_FRAME_COLUMNS`).

    NaN and infinite metrics are kept as such; an empty sweep gives an empty frame with the columns.

    ``previous`` and ``as_of``: a frame this function returned for the sweep and the sweep's ``trials_version``
    read before it. Then only the rows changed since (``changed_version > as_of``) are read and put in place of
    their old rows; the result is equal to a full read, values and dtypes (each column gets the dtype pandas
    infers for the merged rows; where that is not known without the rows, the sweep is read in full).
    """
    if previous is None or as_of is None or len(previous) == 0:
        return _read_trials_frame(session, sweep_id=sweep_id)
    changed = _read_trials_frame(session, sweep_id=sweep_id, changed_after=as_of)
    if len(changed) == 0:
        return previous
    merged = _merged_by_id(previous, changed)
    return _read_trials_frame(session, sweep_id=sweep_id) if merged is None else merged


# A full read's dtypes follow pandas' inference from the rows: a merge gives each column the dtype that inference
# gives the merged rows. Every column with no value at all is object (None), but these, which are float64 (NaN):
_FLOAT_COLUMNS = ("lr", "metric", "best_metric", "initial_metric", "wall_s")
# Columns of ints or missing values: int64; float64 (NaN) with some missing.
_INFERRED_INT_COLUMNS = ("steps",)
# Columns of bools or missing values: bool; object (True, False, None) with some missing.
_INFERRED_BOOL_COLUMNS = ("lower_is_better",)
# Every other column with values has one dtype whatever the rows: int64, float64, str, datetime64[UTC] or object
# (dicts; or datetimes of mixed offsets, converted one by one).


def _merged_by_id(previous: pd.DataFrame, changed: pd.DataFrame) -> pd.DataFrame | None:
    """``previous`` with its rows whose id is in ``changed`` replaced by those and new ids added, ordered by id,
    with the dtypes a full read of the merged rows has; ``None`` where that is not known without one."""
    import numpy as np
    import pandas as pd

    kept = previous[~np.isin(previous["id"].to_numpy(), changed["id"].to_numpy())]
    parts = [part for part in (kept, changed) if len(part)]
    columns: dict[str, Any] = {}
    for name in TRIAL_FRAME_COLUMNS:
        series = [part[name] for part in parts]
        valued = {column.dtype for column in series if column.notna().any()}
        if name in _INFERRED_INT_COLUMNS + _INFERRED_BOOL_COLUMNS:
            if len({column.dtype for column in series}) > 1:
                series = [column.astype(object) for column in series]  # the dtype is settled below
        elif len(valued) > 1:
            return None  # e.g. datetimes of one offset in one part and of mixed offsets in the other
        elif valued and name not in _FLOAT_COLUMNS:
            (dtype,) = valued
            series = [column if column.dtype == dtype else column.astype(dtype) for column in series]
        columns[name] = pd.concat(series, ignore_index=True)
    merged = pd.DataFrame(columns, columns=list(TRIAL_FRAME_COLUMNS))
    rows = len(merged)
    for name in TRIAL_FRAME_COLUMNS:
        column = merged[name]
        missing = int(column.isna().sum())
        if missing == rows and name not in _FLOAT_COLUMNS:
            merged[name] = pd.Series([None] * rows, dtype=object)
        elif name in _INFERRED_INT_COLUMNS:
            merged[name] = column.astype("float64" if missing else "int64")
        elif name in _INFERRED_BOOL_COLUMNS:
            if missing:
                merged[name] = pd.Series([None if pd.isna(v) else bool(v) for v in column], dtype=object)
            else:
                merged[name] = column.astype(bool)
    order = np.argsort(merged["id"].to_numpy(), kind="stable")
    if (order[1:] < order[:-1]).any():
        merged = merged.take(order).reset_index(drop=True)
    return merged


def _read_trials_frame(session: Session, *, sweep_id: str, changed_after: int | None = None) -> pd.DataFrame:
    """The sweep's trials (those with ``changed_version > changed_after`` if given) as :func:`trials_frame`."""
    import pandas as pd

    # Read without the per-value Python of the store's column types (a big sweep has 10,000 rows x 8 such
    # values): FaithfulFloat's values raw (a float, None, or SQLite's text 'NaN'), UTCDateTime's as the
    # dialect's own datetimes, made UTC column by column below, and on SQLite the JSON text parsed here (the
    # usual '{}' without the decoder). The frame is the same as reading every column through its type
    # (tests/store compare the two on SQLite and PostgreSQL).
    raw_json = session.get_bind().dialect.name == "sqlite"
    columns = [_frame_column(name, raw_json=raw_json) for name in TRIAL_FRAME_COLUMNS]
    statement = sa.select(*columns).where(Trial.sweep_id == sweep_id).order_by(Trial.id)
    if changed_after is not None:
        statement = statement.where(Trial.changed_version > changed_after)
    with _read(session):
        rows = session.connection().execute(statement).all()
    values = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in TRIAL_FRAME_COLUMNS]
    data = dict(zip(TRIAL_FRAME_COLUMNS, values, strict=True))
    for name in _FAITHFUL_FLOAT_COLUMNS:
        data[name] = [value if value is None or value.__class__ is float else float(value) for value in data[name]]
    for name in _JSON_COLUMNS if raw_json else ():
        data[name] = [None if text is None else {} if text == "{}" else json.loads(text) for text in data[name]]
    frame = pd.DataFrame(data, columns=list(TRIAL_FRAME_COLUMNS)) if rows else pd.DataFrame(columns=list(data))
    for name in _FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    for name in _DATETIME_COLUMNS:
        column = frame[name]
        if column.dtype.kind == "M":  # naive UTC (SQLite) or aware (PostgreSQL); all missing stays None
            frame[name] = column.dt.tz_localize("UTC") if column.dt.tz is None else column.dt.tz_convert("UTC")
        elif rows and column.notna().any():  # datetimes pandas did not convert (mixed offsets): one by one
            frame[name] = pd.Series([UTCDateTime().process_result_value(v, session.get_bind().dialect) for v in column])
    return frame


_FAITHFUL_FLOAT_COLUMNS = ("metric", "best_metric", "initial_metric")
_DATETIME_COLUMNS = ("created_at", "started_at", "finished_at")
_JSON_COLUMNS = ("hyperparameters", "task_options")


def _frame_column(name: str, *, raw_json: bool) -> Any:
    """A column of :func:`trials_frame`, read as its underlying type (no per-value Python processing)."""
    column = getattr(Trial, name)
    if name in _FAITHFUL_FLOAT_COLUMNS or (raw_json and name in _JSON_COLUMNS):
        return sa.type_coerce(column, sa.types.NullType()).label(name)
    if name in _DATETIME_COLUMNS:
        return sa.type_coerce(column, sa.DateTime(timezone=True)).label(name)
    return column


# ---------------------------------------------------------------------------------------------- tokens


@retried
def create_token(session: Session, *, name: str) -> tuple[ApiToken, str]:
    """Make a bearer token named ``name``; returns the row and the clear token, which is shown only now.

    Only the token's SHA-256 digest is stored.
    """
    clear = secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_token(clear))
    with _write(session):
        session.add(token)
    return token, clear


def check_writable(session: Session) -> None:
    """Raise the database's error unless a write commits now: rewrites the migration revision row with its own
    value in a write transaction (a real write, so a failing disk or a read-only server shows)."""
    with _write(session):
        session.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))


@retried
def verify_token(session: Session, *, token: str, now: datetime | None = None) -> bool:
    """Whether ``token`` is a stored, unrevoked token; records when it was last used."""
    if not token:
        return False
    digest = hash_token(token)
    with _read(session):  # a wrong token never takes the write lock (on SQLite it would wait for a writer)
        known = session.scalar(
            sa.select(ApiToken.id).where(ApiToken.token_hash == digest, ApiToken.revoked.is_(False))
        )
    if known is None:
        return False
    with _write(session):
        result = session.execute(
            sa.update(ApiToken)
            .where(ApiToken.token_hash == digest, ApiToken.revoked.is_(False))
            .values(last_used_at=now or utc_now())
            .execution_options(synchronize_session=False)
        )
    return result.rowcount == 1


@retried
def revoke_token(session: Session, *, token_id: int) -> bool:
    """Revoke a token by id; ``False`` if there is no such token."""
    with _write(session):
        result = session.execute(
            sa.update(ApiToken)
            .where(ApiToken.id == token_id)
            .values(revoked=True)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount == 1


def list_tokens(session: Session) -> list[ApiToken]:
    """All tokens (digests only), oldest first."""
    with _read(session):
        tokens = list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))
    return tokens


# --------------------------------------------------------------------------------------------- workers

#: A worker row not refreshed for this long is deleted by the next worker that records itself (s): a day.
FORGET_WORKERS_AFTER_S = 86_400.0


@retried
def record_worker(
    session: Session,
    *,
    worker_id: str,
    host: str,
    pid: int,
    started_at: datetime,
    current_sweep: str | None,
    now: datetime | None = None,
) -> None:
    """Upsert a worker's heartbeat row (``last_seen = now``); rows unseen for a day are forgotten."""
    now = now or utc_now()
    values = {"host": host, "pid": pid, "started_at": started_at, "last_seen": now, "current_sweep": current_sweep}
    with _write(session):
        statement = _insert(session, Worker).values(id=worker_id, **values)
        session.execute(statement.on_conflict_do_update(index_elements=[Worker.id], set_=values))
        session.execute(
            sa.delete(Worker).where(Worker.last_seen < _utc(now - timedelta(seconds=FORGET_WORKERS_AFTER_S)))
        )


@retried
def remove_worker(session: Session, *, worker_id: str) -> None:
    """Delete a worker's row (it is stopping cleanly)."""
    with _write(session):
        session.execute(sa.delete(Worker).where(Worker.id == worker_id))


def list_workers(session: Session) -> list[Worker]:
    """Every recorded worker, most recently seen first."""
    with _read(session):
        return list(session.scalars(sa.select(Worker).order_by(Worker.last_seen.desc(), Worker.id)))


def worker_is_alive(worker: Worker, *, within_seconds: float, now: datetime | None = None) -> bool:
    """Whether ``worker`` was seen within the last ``within_seconds``."""
    return worker.last_seen >= (now or utc_now()) - timedelta(seconds=within_seconds)
