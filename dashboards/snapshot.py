"""What the pages and the report show of a sweep, read from the store at one moment (all through
:mod:`nero_study.store.repo`): :class:`SweepSnapshot` and :func:`load_sweep_snapshot`, a sweep-list row, a
trial as a plain record, and the version tokens the live pages compare to know whether anything changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from dashboards.common import label_order, spec_labels
from dashboards.learning_curves import select_curve_trials
from dashboards.progress import ProgressBar, progress_bar
from nero_study.store import repo
from nero_study.study.analysis import SweepAnalysis, analyze_sweep
from nero_study.vocabulary import SWEEP_FINISHED

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: The fields of a trial shown on its page: the columns of the store's trials frame but the settings' hash.
TRIAL_FIELDS: tuple[str, ...] = tuple(name for name in repo.TRIAL_FRAME_COLUMNS if name != "params_key")


class SweepListItem(NamedTuple):
    """One row of the sweep list."""

    id: str
    name: str
    status: str
    created_at: datetime | None
    finished_at: datetime | None
    tasks: tuple[str, ...]
    labels: tuple[str, ...]
    counts: dict[str, int]
    progress: ProgressBar


def sweep_list_item(sweep: Any, *, counts: Mapping[str, int], planned: int | None) -> SweepListItem:
    """A sweep list row from a stored sweep (any object with the ``Sweep`` attributes) and its counts."""
    spec = dict(getattr(sweep, "spec", None) or {})
    tasks = tuple(str(task) for task in spec.get("tasks", []) or [])
    return SweepListItem(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        created_at=getattr(sweep, "created_at", None),
        finished_at=getattr(sweep, "finished_at", None),
        tasks=tasks,
        labels=spec_labels(spec),
        counts=dict(counts),
        progress=progress_bar(counts, planned),
    )


def trial_record(trial: Any) -> dict[str, Any]:
    """A stored trial (a mapping or an object with the ``Trial`` attributes) as a plain dict of TRIAL_FIELDS."""
    if isinstance(trial, Mapping):
        return {name: trial.get(name) for name in TRIAL_FIELDS}
    return {name: getattr(trial, name, None) for name in TRIAL_FIELDS}


def trial_version(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> str:
    """Changes whenever a trial's status or its number of curve points does (what the trial page compares)."""
    return f"{trial.get('status')}:{len(curve)}"


def sweep_version(status: str, counts: Mapping[str, int]) -> str:
    """A short token of a sweep's state: its status and its trial counts by status."""
    return status + ":" + ",".join(f"{k}={int(counts[k])}" for k in sorted(counts))


@dataclass(frozen=True)
class SweepSnapshot:
    """Everything the pages and the report show of one sweep, read at one moment through the repo."""

    id: str
    name: str
    status: str
    spec: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    execution: str | None
    cancel_requested: bool
    counts: dict[str, int]
    planned_trials: int | None
    trials: pd.DataFrame = field(repr=False)
    analysis: SweepAnalysis = field(repr=False)
    analysis_error: str | None = None  # why the trials could not be analysed (the figures say so)
    curves: tuple[tuple[dict[str, Any], list[dict[str, Any]]], ...] = field(default=(), repr=False)
    #: The sweep's change counters in the store when this was read (``Sweep.version``: what ETags are made of;
    #: ``Sweep.trials_version``: while it holds, ``trials`` and ``analysis`` are current).
    store_version: int = 0
    trials_version: int = 0
    #: (busy, available) slot-seconds summed over the sweep's attempts (``None``: not measured).
    busy_slot_s: float | None = None
    slot_s: float | None = None

    @property
    def slot_utilisation(self) -> float | None:
        """Busy over available slot-seconds (0..1), ``None`` when not measured."""
        if self.busy_slot_s is None or not self.slot_s:
            return None
        return min(1.0, self.busy_slot_s / self.slot_s)

    @property
    def labels(self) -> tuple[str, ...]:
        """Optimiser labels in spec order, then any others found in the trials."""
        return label_order(self.analysis, spec_labels(self.spec))

    @property
    def finished(self) -> bool:
        """Whether the sweep has ended (nothing more will change)."""
        return self.status in SWEEP_FINISHED

    @property
    def version(self) -> str:
        """Changes whenever a trial changes status or the sweep does (what the live pages compare)."""
        return sweep_version(self.status, self.counts)

    @property
    def progress(self) -> ProgressBar:
        return progress_bar(self.counts, self.planned_trials)


def safe_analysis(trials: pd.DataFrame) -> tuple[SweepAnalysis, str | None]:
    """The analysis of ``trials``, or an empty one and the reason when the trials cannot be analysed."""
    try:
        return analyze_sweep(trials), None
    except ValueError as exc:
        return analyze_sweep([]), str(exc)


def load_sweep_snapshot(
    session: Session, *, sweep_id: str, with_curves: bool = True, previous: SweepSnapshot | None = None
) -> SweepSnapshot | None:
    """Read a sweep, its trial counts and trials, analyse them and (``with_curves``) load the learning curves
    of each optimiser's best-lr trial, all through :mod:`nero_study.store.repo`. ``None`` for an unknown id.

    ``previous``: an earlier snapshot of the same sweep, loaded with its curves. When no trial row changed
    since (the same ``trials_version``: only curve points or the sweep's own status did), its trials, analysis
    and choice of curve trials are taken over and only the sweep, the counts and the curves are read again.
    Otherwise only the trial rows changed since its ``trials_version`` are read and merged into its trials.
    """
    from nero_study.study.plan import stored_planned_trials  # lazily: it validates specs (torch)

    sweep = repo.get_sweep(session, sweep_id=sweep_id)  # read first: everything after is at least as new
    if sweep is None:
        return None
    trials_version = int(sweep.trials_version or 0)
    counts = repo.sweep_counts(session, sweep_id=sweep.id)
    reuse = with_curves and previous is not None and previous.id == sweep.id
    reuse = reuse and previous is not None and previous.trials_version == trials_version
    if reuse:
        assert previous is not None
        trials, analysis, error = previous.trials, previous.analysis, previous.analysis_error
        chosen = [trial for trial, _ in previous.curves]
    else:
        # Only the trial rows changed since the previous snapshot are read (the frame is the same as a full read).
        base = previous if previous is not None and previous.id == sweep.id else None
        trials = repo.trials_frame(
            session,
            sweep_id=sweep.id,
            previous=None if base is None else base.trials,
            as_of=None if base is None else base.trials_version,
        )
        analysis, error = safe_analysis(trials)
        chosen = select_curve_trials(trials, analysis) if with_curves else []
    curves: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if with_curves:
        for trial in chosen:
            curves.append((trial, repo.trial_curve(session, trial_id=int(trial["id"]))))
    return SweepSnapshot(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        spec=dict(sweep.spec or {}),
        created_at=sweep.created_at,
        started_at=sweep.started_at,
        finished_at=sweep.finished_at,
        error=sweep.error,
        execution=sweep.execution,
        cancel_requested=bool(sweep.cancel_requested),
        counts=dict(counts),
        planned_trials=stored_planned_trials(sweep),
        trials=trials,
        analysis=analysis,
        analysis_error=error,
        curves=tuple(curves),
        store_version=int(sweep.version or 0),
        trials_version=trials_version,
        busy_slot_s=sweep.busy_slot_s,
        slot_s=sweep.slot_s,
    )


__all__ = [
    "TRIAL_FIELDS",
    "SweepListItem",
    "SweepSnapshot",
    "load_sweep_snapshot",
    "safe_analysis",
    "sweep_list_item",
    "sweep_version",
    "trial_record",
    "trial_version",
]
