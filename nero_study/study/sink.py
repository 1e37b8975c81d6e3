"""Where a sweep's events land: the store, written from the driver (Ray workers never touch the database).

:class:`StoreSink` is a plain object: it knows which store trials each bundle runs, and turns the protocol's
events into store writes (mark running, add curve points, finish; fail what a lost bundle left unfinished),
counting progress as it goes. Both execution paths hand it events: the warm runners' pool directly, and a
per-sweep Tune experiment through the thin :class:`TuneStoreCallback` adapter.

Writes are idempotent per attempt: a bundle that is run again (its runner died) re-sends members that already
finished; the sink keeps their first result.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback
from sqlalchemy.orm import Session, sessionmaker

from nero_study.store import repo
from nero_study.study.protocol import (
    RESULT_EVENTS,
    Event,
    ExecutionChosen,
    TrialEvaluated,
    TrialFinished,
    TrialStarted,
    decode_events,
)
from nero_study.vocabulary import TRIAL_FINISHED, ExecutionUsed


@dataclass
class SweepProgress:
    """Counts the CLI and the worker show while a sweep runs (by trial status, plus ``already_done``)."""

    total: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.monotonic)
    execution: str = ""

    @property
    def done(self) -> int:
        return sum(self.counts[status] for status in TRIAL_FINISHED)

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started_at
        finished_now = self.done - self.counts["already_done"]
        remaining = self.total - self.done
        if finished_now <= 0 or remaining <= 0:
            return None if remaining > 0 else 0.0
        return elapsed / finished_now * remaining


ProgressHook = Callable[[SweepProgress], None]


class StoreSink:
    """Writes the events of one sweep attempt's bundles into the store and keeps its progress counts."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        sweep_id: str,
        attempt: int,
        progress: SweepProgress,
        on_progress: ProgressHook | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.sweep_id = sweep_id
        self.attempt = attempt
        self.progress = progress
        self.on_progress = on_progress
        self.members: dict[str, list[int]] = {}  # bundle id -> store trial ids, by member index
        self.finished: set[int] = set()
        self.running: set[int] = set()
        self.execution_used: set[ExecutionUsed] = set()

    def register(self, bundle_id: str, trial_ids: Sequence[int]) -> None:
        """Say which store trials ``bundle_id``'s members are (member i is ``trial_ids[i]``)."""
        self.members[bundle_id] = list(trial_ids)

    def write(self, bundle_id: str, events: Sequence[Event]) -> None:
        """Store ``events`` of one bundle in one transaction per batch; progress hooks run afterwards."""
        ids = self.members[bundle_id]
        points: dict[int, list[dict[str, float]]] = {}
        with self.session_factory() as session:
            for event in events:
                if isinstance(event, ExecutionChosen):
                    self.execution_used.add(event.mode)
                    continue
                trial_id = ids[event.member]
                if trial_id in self.finished:
                    continue  # a bundle run again re-running a finished member: keep the first result
                if isinstance(event, TrialStarted):
                    repo.mark_trial_running(session, trial_id=trial_id, attempt=self.attempt)
                    self.running.add(trial_id)
                elif isinstance(event, TrialEvaluated):
                    points.setdefault(trial_id, []).append(event.point())
                elif isinstance(event, TrialFinished):
                    if trial_id in points:
                        repo.add_metric_points(session, trial_id=trial_id, points=points.pop(trial_id))
                    repo.finish_trial(session, trial_id=trial_id, attempt=self.attempt, **event.fields())
                    self._finished(trial_id, event.status)
            for trial_id, trial_points in points.items():
                repo.add_metric_points(session, trial_id=trial_id, points=trial_points)
        self._report()

    def fail_unfinished(self, bundle_id: str, message: str) -> None:
        """Fail the members of ``bundle_id`` that did not finish (their process was lost), with ``message``."""
        unfinished = [t for t in self.members.get(bundle_id, []) if t not in self.finished]
        if not unfinished:
            return
        with self.session_factory() as session:
            for trial_id in unfinished:
                repo.finish_trial(
                    session,
                    trial_id=trial_id,
                    status="failed",
                    metric=math.nan,
                    best_metric=math.nan,
                    initial_metric=math.nan,
                    error=message,
                    attempt=self.attempt,
                )
                self._finished(trial_id, "failed")
        self._report()

    def _finished(self, trial_id: int, status: str) -> None:
        self.finished.add(trial_id)
        self.running.discard(trial_id)
        self.progress.counts[status] += 1

    def _report(self) -> None:
        self.progress.counts["running"] = len(self.running)
        if self.on_progress is not None:
            self.on_progress(self.progress)


def tune_trial_error(trial: Any) -> str | None:
    """The last line of a failed Tune trial's error file (the exception), if Tune wrote one."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().strip().splitlines()
        return lines[-1] if lines else None
    return None


class TuneStoreCallback(Callback):
    """Driver-side Tune callback of a per-sweep experiment: hands each Tune trial's events to a :class:`StoreSink`.

    A Tune trial runs one bundle (``config["bundle"]``, registered when it starts) or, under TPE, one trial
    that ``new_trial(config)`` adds to the store when Tune starts it.
    """

    def __init__(self, sink: StoreSink, *, new_trial: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.sink = sink
        self.new_trial = new_trial
        self.bundle_of: dict[str, str] = {}  # Tune trial id -> bundle id
        self.started_at: dict[str, float] = {}  # Tune trial id -> when it started (driver's clock)
        self.busy_s = 0.0  # slot-seconds of the Tune trials that have ended (each holds one slot)

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its callbacks into the experiment state; this one lives only in the driver

    def _ended(self, trial: Any) -> None:
        started = self.started_at.pop(trial.trial_id, None)
        if started is not None:
            self.busy_s += time.monotonic() - started

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if trial.trial_id in self.bundle_of:
            return
        self.started_at[trial.trial_id] = time.monotonic()
        if "bundle" in trial.config:
            bundle = trial.config["bundle"]
            self.sink.register(bundle["bundle_id"], bundle["trial_ids"])
            self.bundle_of[trial.trial_id] = bundle["bundle_id"]
        elif self.new_trial is not None:
            self.sink.register(trial.trial_id, [self.new_trial(trial.config)])
            self.bundle_of[trial.trial_id] = trial.trial_id

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if trial.trial_id not in self.bundle_of:
            self.on_trial_start(iteration, trials, trial)
        events = decode_events(result.get(RESULT_EVENTS) or [])
        if events:
            self.sink.write(self.bundle_of[trial.trial_id], events)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial)
        if trial.trial_id in self.bundle_of:
            message = f"Ray Tune trial failed after retries: {tune_trial_error(trial) or 'see Ray logs'}"
            self.sink.fail_unfinished(self.bundle_of[trial.trial_id], message)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trial)
        if trial.trial_id in self.bundle_of:
            message = "the bundle ended without a result for this trial"
            self.sink.fail_unfinished(self.bundle_of[trial.trial_id], message)
