r"""The sweep engine: a stored sweep's pending trials, run on Ray, written back to the store.

Path of one trial (docs/architecture.md has the whole picture): the plan (``plan.py``) becomes rows in
``trials``; the unfinished rows become :class:`~nero_study.study.protocol.Bundle`\ s per task; each bundle runs
in one Ray process (``execute.run_bundle``), on the worker's warm runners (``pool.py``) or as one Tune trial of
a per-sweep experiment, and streams its events back; the engine's :class:`~nero_study.study.sink.StoreSink`
writes them into the store. Ray workers never touch the database. A re-run of the same sweep id skips finished
trials, so a crash loses nothing and counts nothing twice.

The per-sweep Tune experiment runs in the caller's main thread (Tune needs it): ``nero-study sweep`` and TPE.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ray.tune import Stopper
from sqlalchemy.orm import Session, sessionmaker

from nero_study.store import repo
from nero_study.study.batched import auto_execution
from nero_study.study.cluster import PoolShape, ensure_ray, pool_shape
from nero_study.study.plan import PlannedTrial, plan_bracket_round, plan_seed_repeats, plan_trials, tpe_space
from nero_study.study.pool import WarmPool
from nero_study.study.protocol import Bundle
from nero_study.study.sink import ProgressHook, StoreSink, SweepProgress, TuneStoreCallback
from nero_study.study.spec import SweepSpec
from nero_study.study.trainables import bundle_trainable, tpe_trainable
from nero_study.tasks.base import TrialSpec
from nero_study.vocabulary import TRIAL_FINISHED, ExecutionMode, ExecutionUsed, same_lr

logger = logging.getLogger(__name__)


def choose_bundle_size(
    spec: SweepSpec, pending_in_task: int, slots: int, execution: ExecutionMode = "packed", *, warm: bool = False
) -> int:
    """How many trials one bundle runs back to back (or stacked, when batched).

    ``separate`` runs one trial per bundle. Otherwise the spec's ``bundle_size`` if given; for the paper
    budget 1 (trials are hours long, the fixed price is negligible) unless batched; batched: one stacked run
    per slot. Packed on warm runners: 1, since a dispatched bundle costs milliseconds and runners taking trials
    one at a time balance the slots best. Packed on a fresh Tune experiment: enough to give every slot about
    two bundles of this task, so that work stays balanced while Tune's price per trial is paid rarely.
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


def longest_first(bundles: Sequence[Bundle], seconds: dict[str, float]) -> list[Bundle]:
    """``bundles`` by expected length, longest first: members x their task's mean trial seconds (``seconds``;
    a task not measured yet counts as the mean of those measured, or 1 s when none is). Ties keep their order.

    Longest-processing-time-first: whatever slot frees up takes the longest bundle left, so the last bundles
    to start are the short ones and the slots end close together.
    """
    default = sum(seconds.values()) / len(seconds) if seconds else 1.0
    return sorted(bundles, key=lambda b: -len(b.trial_ids) * seconds.get(b.specs[0].task, default))


def make_bundles(members: Sequence[tuple[int, TrialSpec]], size: int, execution: ExecutionMode) -> list[Bundle]:
    """``members`` (store id, spec) of one task dealt round-robin into bundles of at most ``size``.

    Round-robin gives each bundle a mix of lrs, so bundles of early-diverging (short) trials and of long ones
    do not leave a slot idle at the end.
    """
    count = math.ceil(len(members) / size)
    return [
        Bundle(
            bundle_id=uuid.uuid4().hex[:12],
            trial_ids=tuple(trial_id for trial_id, _ in members[first::count]),
            specs=tuple(trial_spec for _, trial_spec in members[first::count]),
            execution=execution,
        )
        for first in range(count)
    ]


#: How a sweep's bundles are ordered. ``longest-first``: by expected length, and on warm runners the paper
#: protocol's seed repeats of a task start once its grid has ended. ``fifo``: in plan order, repeats after the
#: whole grid (the schedule before slot use was measured; kept so that the benchmark compares the two).
Schedule = Literal["longest-first", "fifo"]
SCHEDULES: tuple[Schedule, ...] = ("longest-first", "fifo")


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
    #: (busy, available) slot-seconds of this run, ``None`` when it ran nothing (see ``Sweep.slot_utilisation``).
    slot_use: tuple[float, float] | None = None


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
        cancel_check_seconds: float = 1.0,
        max_failures: int = 2,
        attempt: int = 1,
        pool: WarmPool | None = None,
        give_up: Callable[[], bool] | None = None,
        schedule: Schedule = "longest-first",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"Invalid schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
        self.schedule = schedule
        self.pool = pool
        # Stop without waiting for trials in flight (the warm runners' path; a stalled sweep's runners may hang).
        self.give_up = give_up
        self.session_factory = session_factory
        self.attempt = attempt
        self.sweep_id = sweep_id
        self.spec = spec
        self.on_progress = on_progress
        self.stopper = _CancelStopper(should_cancel, cancel_check_seconds)
        self.max_failures = max_failures
        self.progress = SweepProgress()
        self.execution_used: set[ExecutionUsed] = set()
        self.busy_slot_s = 0.0  # slot-seconds in which a slot ran one of this run's bundles
        self.slot_s = 0.0  # slot-seconds this run had: slots x the time its trials ran
        self._phase_of: dict[int, str] = {}  # store trial id -> phase, of the unfinished trials last read

    # -- planning -------------------------------------------------------------------------------
    def _store_plan(self, planned: Sequence[PlannedTrial]) -> list[tuple[int, TrialSpec]]:
        """Store ``planned`` (what is stored already is kept); returns those of them that are still to run."""
        with self.session_factory() as session:
            rows = repo.add_trials(
                session,
                sweep_id=self.sweep_id,
                trials=[{**item.spec.to_dict(), "phase": item.phase} for item in planned],
            )
            return [(row.id, _row_spec(row)) for row in rows if row.status not in TRIAL_FINISHED]

    def _unfinished(self) -> list[tuple[int, TrialSpec]]:
        with self.session_factory() as session:
            rows = repo.pending_trials(session, sweep_id=self.sweep_id)
            self._phase_of = {row.id: row.phase for row in rows}
            return [(row.id, _row_spec(row)) for row in rows]

    def _refresh_counts(self) -> None:
        with self.session_factory() as session:
            counts = repo.sweep_counts(session, sweep_id=self.sweep_id)
        self.progress.counts = Counter({k: v for k, v in counts.items() if k in TRIAL_FINISHED})
        self.progress.counts["already_done"] = self.progress.done

    # -- running --------------------------------------------------------------------------------
    def run(self) -> SweepOutcome:
        start = time.perf_counter()
        ensure_ray()
        if self.spec.protocol == "tpe":
            self._run_tpe()
        elif self.spec.protocol == "bracket":
            self._run_bracket()
        else:
            self._store_plan(plan_trials(self.spec))
            paper = self.spec.protocol == "paper"
            # On warm runners a task's seed repeats start as soon as its grid is done; on a per-sweep Tune
            # experiment (or whatever that left), after the whole grid.
            self._run_pending(with_repeats=paper and self.pool is not None and self.schedule == "longest-first")
            if paper and not self.stopper.cancelled:
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
        slot_use = (self.busy_slot_s, self.slot_s) if self.slot_s > 0 else None
        return SweepOutcome(self.sweep_id, status, dict(counts), execution, time.perf_counter() - start, slot_use)

    def _run_bracket(self) -> None:
        """Round 0 (the coarse grid, every seed), then one round after another: each (task, optimiser) adds the lr
        the bracket rule chooses from the stored results, until none adds one (``plan.plan_bracket_round``); then
        the sweep's ``planned_trials`` becomes the count it ran. A resumed sweep re-plans from what is stored, so
        it runs only what is missing."""
        self._store_plan(plan_trials(self.spec))
        self._run_pending()
        while not self.stopper.cancelled:
            with self.session_factory() as session:
                records = repo.trials_frame(session, sweep_id=self.sweep_id).to_dict("records")
            planned = plan_bracket_round(self.spec, records)
            if planned:
                self._store_plan(planned)
            # Done when no pair adds an lr, or when what it adds is stored already and ended (no progress possible).
            if not planned or not self._run_pending():
                with self.session_factory() as session:  # the count it ran replaces the worst case of submission
                    repo.set_planned_trials(session, sweep_id=self.sweep_id, planned=len(records))
                return

    def _shape(self) -> PoolShape:
        """Per-trial resources, how many trials run at once, torch threads per trial."""
        return pool_shape(self.spec.resources, self.spec.max_concurrency)

    def _run_pending(self, *, with_repeats: bool = False) -> int:
        """Run the sweep's unfinished trials; returns how many there were.

        ``with_repeats`` (the paper protocol on warm runners): each task's seed repeats join the queue as soon as
        that task's grid trials have all ended, so that the runners never wait for the slowest task's grid.
        """
        pending = self._unfinished()
        self._refresh_counts()
        self.progress.total = self.progress.done + len(pending)
        if not pending:
            return 0
        shape = self._shape()
        modes: set[str] = set()
        bundles = self._bundles(pending, shape, modes)
        self.progress.execution = "+".join(sorted(modes))
        sink = self._sink()
        started = time.monotonic()
        if self.pool is not None:
            refill = self._repeats_when_grid_done(pending, sink, shape, modes) if with_repeats else None
            if refill is not None:
                bundles += refill()  # tasks whose grid ended in an earlier attempt
            self.pool.run(bundles, sink, self.stopper.stop_all, self.give_up, refill=refill)
            busy = self.pool.last_busy_s
            if self.give_up is not None and self.give_up():
                self.stopper.cancelled = True
        else:
            from ray import tune

            callback = TuneStoreCallback(sink)
            self._fit(
                tune.with_resources(bundle_trainable, shape.resources),
                param_space={"bundle": tune.grid_search([b.to_wire() for b in bundles]), "threads": shape.threads},
                callback=callback,
                slots=shape.slots,
            )
            busy = callback.busy_s
        if busy is not None:
            self.busy_slot_s += busy
            self.slot_s += shape.slots * (time.monotonic() - started)
        self.progress.execution = "+".join(sorted(modes))
        self.execution_used |= sink.execution_used
        return len(pending)

    def _bundles(self, members: Sequence[tuple[int, TrialSpec]], shape: PoolShape, modes: set[str]) -> list[Bundle]:
        """``members`` in bundles, per task, longest first (by the tasks' measured trial times): the slots then
        end together instead of one of them running a long bundle alone at the end. Adds the modes to ``modes``."""
        by_task: dict[str, list[tuple[int, TrialSpec]]] = {}
        for trial_id, trial_spec in members:
            by_task.setdefault(trial_spec.task, []).append((trial_id, trial_spec))
        bundles: list[Bundle] = []
        for task_members in by_task.values():
            execution = self._execution_mode(task_members)
            modes.add(execution)
            size = choose_bundle_size(
                self.spec, len(task_members), shape.slots, execution, warm=self.pool is not None
            )
            bundles.extend(make_bundles(task_members, size, execution))
        if self.schedule == "fifo":
            return bundles
        with self.session_factory() as session:
            seconds = repo.mean_trial_seconds(session, tasks=list(by_task), budget=self.spec.budget)
        return longest_first(bundles, seconds)

    def _repeats_when_grid_done(
        self, pending: Sequence[tuple[int, TrialSpec]], sink: StoreSink, shape: PoolShape, modes: set[str]
    ) -> Callable[[], list[Bundle]]:
        """The pool's ``refill`` for the paper protocol: the seed repeats of each task whose grid trials (those
        of ``pending`` in phase ``grid``) have all ended, once per task, as bundles."""
        grid_left: dict[str, set[int]] = {task: set() for task in self.spec.tasks}
        queued = {trial_id for trial_id, _ in pending}  # repeats stored by an earlier attempt are among them
        for trial_id, trial_spec in pending:
            if self._phase_of.get(trial_id, "grid") == "grid":
                grid_left.setdefault(trial_spec.task, set()).add(trial_id)

        def refill() -> list[Bundle]:
            done = [task for task, left in grid_left.items() if not (left - sink.finished)]
            if not done:
                return []
            for task in done:
                del grid_left[task]
            with self.session_factory() as session:
                records = repo.trials_frame(session, sweep_id=self.sweep_id).to_dict("records")
            planned = [item for item in plan_seed_repeats(self.spec, records) if item.spec.task in done]
            more = [member for member in self._store_plan(planned) if member[0] not in queued] if planned else []
            queued.update(trial_id for trial_id, _ in more)
            if not more:
                return []
            self.progress.total += len(more)
            logger.info("sweep %s: seed repeats of %s start (%d trials)", self.sweep_id, ", ".join(done), len(more))
            return self._bundles(more, shape, modes)

        return refill

    def _sink(self) -> StoreSink:
        return StoreSink(
            session_factory=self.session_factory,
            sweep_id=self.sweep_id,
            attempt=self.attempt,
            progress=self.progress,
            on_progress=self.on_progress,
        )

    def _execution_mode(self, members: list[tuple[int, TrialSpec]]) -> ExecutionMode:
        """The spec's mode; ``auto`` as :func:`~nero_study.study.batched.auto_execution` rules for the task."""
        if self.spec.execution != "auto":
            return self.spec.execution
        by_label: dict[str, list[TrialSpec]] = {}
        for _, trial_spec in members:
            by_label.setdefault(trial_spec.optimizer_label, []).append(trial_spec)
        mode, why = auto_execution(by_label)
        logger.info("%s: auto runs %s %s: %s", self.spec.name, members[0][1].task, mode, why)
        return mode

    def _fit(
        self,
        trainable: Any,
        *,
        param_space: dict[str, Any],
        callback: TuneStoreCallback,
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
                    callbacks=[callback],
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
        """TPE runs its own Tune experiment per (task, optimiser), after the default lr as a fixed first trial;
        the worker closes its warm runners first."""
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
                default_lr = self.spec.variant(variant.label).default_lr
                done = self._finished_pair_trials(task, variant.label)
                remaining = self.spec.tpe_trials - len(done)
                self._refresh_counts()
                self.progress.total = max(self.progress.total, self.progress.done + remaining)
                if remaining <= 0:
                    continue
                if not any(same_lr(row.lr, default_lr) for row in done):
                    # The default lr is a fixed first trial: the out-of-the-box point TPE might never sample.
                    self._fit_tpe(base, (low, high), [], first=default_lr, samples=1, shape=shape)
                    if self.stopper.cancelled:
                        return
                    done = self._finished_pair_trials(task, variant.label)
                    remaining = self.spec.tpe_trials - len(done)
                    if remaining <= 0:
                        continue
                known = [(row.lr, _objective(row)) for row in done]
                self._fit_tpe(base, (low, high), known, first=None, samples=remaining, shape=shape)

    def _finished_pair_trials(self, task: str, label: str) -> list[Any]:
        with self.session_factory() as session:
            rows = repo.list_trials(session, sweep_id=self.sweep_id, task=task, label=label, limit=100_000)[0]
        return [row for row in rows if row.status in TRIAL_FINISHED]

    def _fit_tpe(
        self,
        base: dict[str, Any],
        space: tuple[float, float],
        known: list[tuple[float, float]],
        *,
        first: float | None,
        samples: int,
        shape: Any,
    ) -> None:
        """One Tune experiment of ``samples`` TPE trials; ``known`` (lr, objective) pairs are told to the sampler,
        ``first`` (when given) is the one point evaluated before TPE samples."""
        import optuna
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        low, high = space
        points = [{"lr": first}] if first is not None else [{"lr": lr} for lr, _ in known]
        searcher = OptunaSearch(
            space={"lr": optuna.distributions.FloatDistribution(low, high, log=True)},
            metric="objective",
            mode="min",
            sampler=optuna.samplers.TPESampler(seed=self.spec.seeds[0]),
            points_to_evaluate=points or None,
            evaluated_rewards=None if first is not None else ([value for _, value in known] or None),
        )
        callback = TuneStoreCallback(
            self._sink(), new_trial=lambda config, base=base: self._add_tpe_trial(base, float(config["lr"]))
        )
        self._fit(
            tune.with_resources(tpe_trainable, shape.resources),
            param_space={"base": base, "threads": shape.threads},
            callback=callback,
            slots=min(shape.slots, samples),
            search_alg=searcher,
            num_samples=samples,
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
