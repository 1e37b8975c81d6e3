"""The sweep engine: a stored sweep's pending trials, run on Ray Tune, written back to the store.

Path of one trial: the plan (``plan.py``) becomes rows in ``trials``; unfinished rows are packed into
bundles per task; each bundle is one Ray Tune trial whose function runs the members back to back
(``execute.run_bundle``) and reports their events in batches; a driver-side Tune callback
(:class:`StoreWriter`) writes the events into the store. Ray workers never touch the database.
A re-run of the same sweep id skips finished trials, so a crash loses nothing and counts nothing twice.

Runs in the caller's main thread (Tune needs it): the CLI's ``sweep`` command and the queue worker.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune import Callback, Stopper
from sqlalchemy.orm import Session, sessionmaker

from nero_study.store import repo
from nero_study.study.plan import plan_seed_repeats, plan_trials, tpe_space
from nero_study.study.pool import PoolShape, WarmPools
from nero_study.study.spec import Resources, SweepSpec
from nero_study.study.trainables import bundle_trainable, tpe_trainable
from nero_study.tasks.base import TrialSpec

logger = logging.getLogger(__name__)

FINISHED = frozenset({"succeeded", "diverged", "failed"})
ProgressHook = Callable[["SweepProgress"], None]


@dataclass
class SweepProgress:
    """Counts the CLI and the worker show while a sweep runs."""

    total: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    started_at: float = field(default_factory=time.monotonic)
    execution: str = ""

    @property
    def done(self) -> int:
        return sum(self.counts[status] for status in FINISHED)

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started_at
        finished_now = self.done - self.counts["already_done"]
        remaining = self.total - self.done
        if finished_now <= 0 or remaining <= 0:
            return None if remaining > 0 else 0.0
        return elapsed / finished_now * remaining


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to Ray once per process: the cluster at ``RAY_ADDRESS`` if set, else a local instance."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, **kwargs)


def _cluster_slots(cpu_per_trial: float, gpu_per_trial: float, max_concurrency: int | None) -> int:
    import ray

    resources = ray.cluster_resources()
    slots = max(1, int(resources.get("CPU", 1) // max(cpu_per_trial, 1e-9)))
    if gpu_per_trial > 0:
        slots = min(slots, max(1, int(resources.get("GPU", 0) // gpu_per_trial)))
    if max_concurrency:
        slots = min(slots, max_concurrency)
    return slots


def pool_shape(resources: Resources, max_concurrency: int | None = None) -> PoolShape:
    """The warm runners a sweep with these per-trial resources runs on: one per slot of the cluster."""
    slots = _cluster_slots(float(resources.cpu), float(resources.gpu), max_concurrency)
    return PoolShape(float(resources.cpu), float(resources.gpu), slots, max(1, int(resources.cpu)))


def choose_bundle_size(
    spec: SweepSpec, pending_in_task: int, slots: int, execution: str = "packed", *, warm: bool = False
) -> int:
    """How many trials one Tune trial (or, on warm runners, one dispatched bundle) runs back to back.

    ``separate`` runs one trial per Tune trial. Otherwise the spec's ``bundle_size`` if given; for the
    paper budget 1 (trials are hours long, the fixed price is negligible) unless batched; batched: one
    stacked run per slot. Packed on warm runners: 1, since a dispatched bundle costs milliseconds and
    runners taking trials one at a time balance the slots best. Packed on a fresh Tune experiment:
    enough to give every slot about two bundles of this task, so that work stays balanced while Tune's
    price per trial is paid rarely.
    """
    if execution == "separate":
        return 1
    if spec.bundle_size:
        return spec.bundle_size
    if spec.budget == "paper" and execution != "batched":
        return 1
    if execution == "batched":
        return max(1, math.ceil(pending_in_task / slots))  # one stacked run per slot
    if warm:
        return 1
    return max(1, math.ceil(pending_in_task / (2 * slots)))


class StoreWriter(Callback):
    """Driver-side Tune callback: writes members' events into the store and tracks progress."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        sweep_id: str,
        progress: SweepProgress,
        on_progress: ProgressHook | None,
        new_trial: Callable[[dict[str, Any]], int] | None = None,
        attempt: int = 1,
    ) -> None:
        self.session_factory = session_factory
        self.attempt = attempt
        self.sweep_id = sweep_id
        self.progress = progress
        self.on_progress = on_progress
        self.new_trial = new_trial
        self.members: dict[str, list[int]] = {}  # Tune trial id -> store trial ids
        self.finished: set[int] = set()
        self.running: set[int] = set()
        self.execution_used: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles its callbacks into the experiment state; this one lives only in the driver

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if trial.trial_id in self.members:
            return
        if "work" in trial.config:
            self.members[trial.trial_id] = list(trial.config["work"]["trial_ids"])
        elif self.new_trial is not None:
            self.members[trial.trial_id] = [self.new_trial(trial.config)]

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if trial.trial_id not in self.members:
            self.on_trial_start(iteration, trials, trial)
        events = result.get("nero_events") or []
        if events:
            self.write_events(trial.trial_id, events)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        message = f"Ray Tune trial failed after retries: {getattr(trial, 'error_file', '') or 'see Ray logs'}"
        error_text = _read_error(trial)
        self.fail_unfinished(trial.trial_id, error_text or message)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.fail_unfinished(trial.trial_id, "the bundle ended without a result for this trial")

    def write_events(self, tune_trial_id: str, events: Sequence[dict[str, Any]]) -> None:
        ids = self.members.get(tune_trial_id, [])
        points: dict[int, list[dict[str, float]]] = {}
        with self.session_factory() as session:
            for event in events:
                kind = event["event"]
                if kind == "execution":
                    self.execution_used.add(event["mode"])
                    continue
                trial_id = ids[event["member"]]
                if trial_id in self.finished:
                    continue  # a retried bundle re-running a finished member: keep the first result
                if kind == "start":
                    repo.mark_trial_running(session, trial_id=trial_id, attempt=self.attempt)
                    self.running.add(trial_id)
                elif kind == "eval":
                    points.setdefault(trial_id, []).append(
                        {k: event[k] for k in ("step", "epoch", "train_loss", "metric")}
                    )
                elif kind == "done":
                    if trial_id in points:
                        repo.add_metric_points(session, trial_id=trial_id, points=points.pop(trial_id))
                    fields = {k: v for k, v in event.items() if k not in {"event", "member"}}
                    repo.finish_trial(session, trial_id=trial_id, attempt=self.attempt, **fields)
                    self.finished.add(trial_id)
                    self.running.discard(trial_id)
                    self.progress.counts[event["status"]] += 1
            for trial_id, trial_points in points.items():
                repo.add_metric_points(session, trial_id=trial_id, points=trial_points)
        self.progress.counts["running"] = len(self.running)
        if self.on_progress is not None:
            self.on_progress(self.progress)

    def fail_unfinished(self, tune_trial_id: str, message: str) -> None:
        unfinished = [t for t in self.members.get(tune_trial_id, []) if t not in self.finished]
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
                self.finished.add(trial_id)
                self.running.discard(trial_id)
                self.progress.counts["failed"] += 1
        self.progress.counts["running"] = len(self.running)
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _read_error(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().strip().splitlines()
        return lines[-1] if lines else None
    return None


class _CancelStopper(Stopper):
    """Tune stopper that polls ``should_cancel`` at most once per ``interval`` seconds."""

    def __init__(self, should_cancel: Callable[[], bool] | None, interval: float = 1.0) -> None:
        self.should_cancel = should_cancel
        self.interval = interval
        self._last = 0.0
        self.cancelled = False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.stop_all()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config into the experiment state; the poller lives only in the driver.
        return {"should_cancel": None, "interval": self.interval, "_last": 0.0, "cancelled": self.cancelled}

    def stop_all(self) -> bool:
        if self.cancelled:
            return True
        if self.should_cancel is None:
            return False
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.cancelled = bool(self.should_cancel())
        return self.cancelled


@dataclass
class SweepOutcome:
    sweep_id: str
    status: str  # succeeded | stopped
    counts: dict[str, int]
    execution: str
    wall_s: float


class SweepEngine:
    """Runs one stored sweep to completion (or cancellation) on Ray Tune."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        sweep_id: str,
        spec: SweepSpec,
        on_progress: ProgressHook | None = None,
        should_cancel: Callable[[], bool] | None = None,
        max_failures: int = 2,
        attempt: int = 1,
        pools: WarmPools | None = None,
    ) -> None:
        self.pools = pools
        self.session_factory = session_factory
        self.attempt = attempt
        self.sweep_id = sweep_id
        self.spec = spec
        self.on_progress = on_progress
        self.stopper = _CancelStopper(should_cancel)
        self.max_failures = max_failures
        self.progress = SweepProgress()
        self.execution_used: set[str] = set()

    # -- planning -------------------------------------------------------------------------------
    def _store_plan(self, planned: Sequence[Any]) -> None:
        with self.session_factory() as session:
            repo.add_trials(
                session,
                sweep_id=self.sweep_id,
                trials=[{**item.spec.to_dict(), "phase": item.phase} for item in planned],
            )

    def _unfinished(self) -> list[tuple[int, TrialSpec]]:
        with self.session_factory() as session:
            rows = repo.pending_trials(session, sweep_id=self.sweep_id)
            return [(row.id, _row_spec(row)) for row in rows]

    def _refresh_counts(self) -> None:
        with self.session_factory() as session:
            counts = repo.sweep_counts(session, sweep_id=self.sweep_id)
        self.progress.counts = Counter({k: v for k, v in counts.items() if k in FINISHED})
        self.progress.counts["already_done"] = self.progress.done

    # -- running --------------------------------------------------------------------------------
    def run(self) -> SweepOutcome:
        start = time.perf_counter()
        ensure_ray()
        if self.spec.protocol == "tpe":
            self._run_tpe()
        else:
            self._store_plan(plan_trials(self.spec))
            self._run_pending()
            if self.spec.protocol == "paper" and not self.stopper.cancelled:
                with self.session_factory() as session:
                    records = repo.trials_frame(session, sweep_id=self.sweep_id).to_dict("records")
                self._store_plan(plan_seed_repeats(self.spec, records))
                self._run_pending()
        # "stopped": the caller asked to stop (a cancel, a shutdown, a lost lease); it decides what the
        # unfinished trials become (cancelled, or left pending for another worker).
        status = "stopped" if self.stopper.cancelled else "succeeded"
        with self.session_factory() as session:
            counts = repo.sweep_counts(session, sweep_id=self.sweep_id)
        execution = "+".join(sorted(self.execution_used)) or "none"
        return SweepOutcome(self.sweep_id, status, dict(counts), execution, time.perf_counter() - start)

    def _shape(self) -> PoolShape:
        """Per-trial resources, how many trials run at once, torch threads per trial."""
        return pool_shape(self.spec.resources, self.spec.max_concurrency)

    def _run_pending(self) -> None:
        pending = self._unfinished()
        self._refresh_counts()
        self.progress.total = self.progress.done + len(pending)
        if not pending:
            return
        shape = self._shape()
        by_task: dict[str, list[tuple[int, TrialSpec]]] = {}
        for trial_id, trial_spec in pending:
            by_task.setdefault(trial_spec.task, []).append((trial_id, trial_spec))
        bundles: list[dict[str, Any]] = []
        modes: set[str] = set()
        for members in by_task.values():
            execution = self._execution_mode(members)
            modes.add(execution)
            size = choose_bundle_size(self.spec, len(members), shape.slots, execution, warm=self.pools is not None)
            # Deal the trials round-robin: each bundle gets a mix of lrs, so bundles of early-diverging
            # (short) trials and of long ones do not leave a slot idle at the end.
            count = math.ceil(len(members) / size)
            for first in range(count):
                chunk = members[first::count]
                bundles.append(
                    {
                        "trial_ids": [trial_id for trial_id, _ in chunk],
                        "bundle": [trial_spec.to_dict() for _, trial_spec in chunk],
                        "execution": execution,
                    }
                )
        self.progress.execution = "+".join(sorted(modes))
        writer = StoreWriter(
            session_factory=self.session_factory,
            sweep_id=self.sweep_id,
            progress=self.progress,
            on_progress=self.on_progress,
            attempt=self.attempt,
        )
        if self.pools is not None:
            self.pools.get(shape).run(bundles, writer, self.stopper.stop_all)
            self.execution_used |= writer.execution_used
            return
        from ray import tune

        self._fit(
            tune.with_resources(bundle_trainable, shape.resources),
            param_space={"work": tune.grid_search(bundles), "threads": shape.threads},
            writer=writer,
            slots=shape.slots,
        )
        self.execution_used |= writer.execution_used

    def _execution_mode(self, members: list[tuple[int, TrialSpec]]) -> str:
        """The spec's mode; ``auto`` picks batched where a task's trials can share stacked runs, else packed."""
        if self.spec.execution != "auto":
            return self.spec.execution
        from nero_study.study.batched import supports_batched

        return "batched" if supports_batched([trial_spec for _, trial_spec in members]) else "packed"

    def _fit(
        self,
        trainable: Any,
        *,
        param_space: dict[str, Any],
        writer: StoreWriter,
        slots: int,
        search_alg: Any = None,
        num_samples: int = 1,
    ) -> None:
        from ray import tune

        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        storage = tempfile.mkdtemp(prefix="nero-study-tune-")
        try:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    num_samples=num_samples,
                    max_concurrent_trials=slots,
                    reuse_actors=True,
                    search_alg=search_alg,
                    metric="objective" if search_alg is not None else None,
                    mode="min" if search_alg is not None else None,
                    trial_name_creator=_short_trial_name,
                    trial_dirname_creator=_short_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=f"sweep-{self.sweep_id}",
                    storage_path=storage,
                    callbacks=[writer],
                    stop=self.stopper,
                    failure_config=tune.FailureConfig(max_failures=self.max_failures),
                    verbose=0,
                    log_to_file=False,
                ),
            )
            quiet = [logging.getLogger(name) for name in ("ray.tune", "ray.train", "ray.air")]
            levels = [log.level for log in quiet]
            for log in quiet:
                log.setLevel(logging.ERROR)
            try:
                tuner.fit()
            finally:
                for log, level in zip(quiet, levels, strict=True):
                    log.setLevel(level)
        finally:
            shutil.rmtree(storage, ignore_errors=True)

    def _run_tpe(self) -> None:
        if self.pools is not None:
            self.pools.close()  # TPE runs its own Tune experiment; the idle runners would hold its slots
        import optuna
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        shape = self._shape()
        for task in self.spec.tasks:
            for variant in self.spec.optimizers:
                if self.stopper.cancelled:
                    return
                low, high = tpe_space(self.spec, variant.label)
                base = TrialSpec(
                    task=task,
                    optimizer=variant.name,
                    lr=1.0,
                    seed=self.spec.seeds[0],
                    budget=self.spec.budget,
                    preset=self.spec.preset,
                    hyperparameters=dict(variant.settings),
                    task_options=dict(self.spec.task_options.get(task, {})),
                    label=variant.label,
                ).to_dict()
                base.pop("lr")
                with self.session_factory() as session:
                    done = [
                        row
                        for row in repo.list_trials(
                            session, sweep_id=self.sweep_id, task=task, label=variant.label, limit=100_000
                        )[0]
                        if row.status in FINISHED
                    ]
                remaining = self.spec.tpe_trials - len(done)
                self._refresh_counts()
                self.progress.total = max(self.progress.total, self.progress.done + remaining)
                if remaining <= 0:
                    continue
                known = [(row.lr, _objective(row)) for row in done]
                searcher = OptunaSearch(
                    space={"lr": optuna.distributions.FloatDistribution(low, high, log=True)},
                    metric="objective",
                    mode="min",
                    sampler=optuna.samplers.TPESampler(seed=self.spec.seeds[0]),
                    points_to_evaluate=[{"lr": lr} for lr, _ in known] or None,
                    evaluated_rewards=[value for _, value in known] or None,
                )
                writer = StoreWriter(
                    session_factory=self.session_factory,
                    sweep_id=self.sweep_id,
                    progress=self.progress,
                    on_progress=self.on_progress,
                    new_trial=lambda config, base=base: self._add_tpe_trial(base, float(config["lr"])),
                    attempt=self.attempt,
                )
                self._fit(
                    tune.with_resources(tpe_trainable, shape.resources),
                    param_space={"base": base, "threads": shape.threads},
                    writer=writer,
                    slots=min(shape.slots, remaining),
                    search_alg=searcher,
                    num_samples=remaining,
                )
                self.execution_used.add("separate")

    def _add_tpe_trial(self, base: dict[str, Any], lr: float) -> int:
        with self.session_factory() as session:
            rows = repo.add_trials(session, sweep_id=self.sweep_id, trials=[{**base, "lr": lr, "phase": "tpe"}])
            return rows[0].id


def _short_trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def _objective(row: Any) -> float:
    value = row.metric if row.status == "succeeded" and row.metric is not None else row.initial_metric
    if value is None or not math.isfinite(value):
        value = 1e12
    return value if row.lower_is_better in (None, True) else -value


def _row_spec(row: Any) -> TrialSpec:
    return TrialSpec(
        task=row.task,
        optimizer=row.optimizer,
        lr=row.lr,
        seed=row.seed,
        budget=row.budget,
        preset=row.preset,
        hyperparameters=dict(row.hyperparameters or {}),
        task_options=dict(row.task_options or {}),
        label=row.label,
    )
