"""Shared pieces of the sweep benchmarks: the trials, a bare Ray Tune baseline and nero-study's engine.

Not a test: these print measurements. Everything runs on this machine's local Ray.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@dataclass
class Timing:
    name: str
    wall_s: float
    trials: int
    note: str = ""


def lr_grid(points: int, low: float = 1e-3, high: float = 1.0) -> list[float]:
    """``points`` log-spaced learning rates from ``low`` to ``high`` (rounded to 4 significant digits)."""
    if points == 1:
        return [low]
    return [float(f"{low * (high / low) ** (i / (points - 1)):.4g}") for i in range(points)]


def sequential_compute(specs: list[Any]) -> tuple[float, list[float]]:
    """Run the trials one by one in this process (warm: the first is run twice and its first run dropped)."""
    import torch

    from nero_study.tasks.runner import run_trial

    torch.set_num_threads(1)
    run_trial(specs[0])  # warm-up: data loading and first-call costs
    times = []
    start = time.perf_counter()
    for spec in specs:
        t0 = time.perf_counter()
        run_trial(spec)
        times.append(time.perf_counter() - t0)
    return time.perf_counter() - start, times


def _bare_trainable(config: dict[str, Any]) -> None:
    import torch
    from ray import tune

    from nero_study.tasks.base import TrialSpec
    from nero_study.tasks.runner import run_trial

    torch.set_num_threads(1)
    result = run_trial(TrialSpec.from_dict(config["spec"]))
    metric = result.metric if math.isfinite(result.metric) else 1e9
    tune.report({"metric": metric, "status": result.status, "trial_wall_s": result.wall_s})


def bare_tuner(specs: list[Any], slots: int) -> tuple[float, float]:
    """What a user would write by hand: one Tune trial per spec, ``reuse_actors=True``.

    Returns the wall time and the trials' own training time summed (each trial times itself).
    """
    from ray import tune

    own: list[float] = []

    class TrialTimes(tune.Callback):  # the trials' own times, from their reports (no result files needed)
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            own.append(float(result.get("trial_wall_s", 0.0)))

    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(_bare_trainable, {"cpu": 1}),
        param_space={"spec": tune.grid_search([spec.to_dict() for spec in specs])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=slots),
        run_config=tune.RunConfig(
            storage_path=tempfile.mkdtemp(prefix="bench-bare-"), verbose=0, callbacks=[TrialTimes()]
        ),
    )
    # Tune warns that result files are missing (the benchmarks turn its file loggers off, as the engine
    # does); the numbers come from the callback above.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    tuner.fit()
    return time.perf_counter() - start, sum(own)


def nero_study_engine(spec_data: dict[str, Any], pool: Any = None) -> tuple[float, str, dict[str, int], float]:
    """nero-study's own path: store the sweep in a fresh SQLite file and run it through the engine.

    ``pool`` (a :class:`nero_study.study.pool.WarmPool`): run on its warm runners, as a worker does
    from its second sweep on; ``None``: a fresh Tune experiment for this sweep, as `nero-study sweep`.

    Returns the wall time, the execution mode used, the trial counts by status, and the trials' own
    training time summed as stored (for batched members: each member's share of its stacked run).
    """
    from nero_study.store import db, repo
    from nero_study.study.engine import SweepEngine
    from nero_study.study.queue import queue_sweep
    from nero_study.study.spec import SweepSpec

    url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-engine-')}/bench.db"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    spec = SweepSpec.model_validate(spec_data)
    with factory() as session:
        sweep, _ = queue_sweep(session, spec, name="bench")
    start = time.perf_counter()
    outcome = SweepEngine(session_factory=factory, sweep_id=sweep.id, spec=spec, pool=pool).run()
    wall = time.perf_counter() - start
    with factory() as session:
        trials, _ = repo.list_trials(session, sweep_id=sweep.id, limit=100_000)
    compute = sum(trial.wall_s or 0.0 for trial in trials)
    return wall, outcome.execution, outcome.counts, compute


def start_ray(slots: int) -> None:
    """Start local Ray and import every path's driver-side modules, so no timed run pays first imports."""
    import ray.tune  # noqa: F401

    import nero_study.store.repo  # noqa: F401
    from nero_study.study.cluster import ensure_ray

    ensure_ray(num_cpus=slots)


def print_table(rows: list[Timing], compute_s: float, slots: int, reference: str) -> None:
    """Wall time, overhead per trial over the trials' own compute (ideal = compute / slots), ratios."""
    ideal = compute_s / slots
    base = next(row.wall_s for row in rows if row.name == reference)
    print(f"\ntrials' own compute, one by one in one process: {compute_s:.2f} s; ideal on {slots} slots: {ideal:.2f} s")
    print(f"{'path':<34}{'wall s':>9}{'overhead s/trial':>18}{'throughput x':>14}  note")
    for row in rows:
        overhead = (row.wall_s - ideal) / row.trials
        print(f"{row.name:<34}{row.wall_s:>9.2f}{overhead:>18.3f}{base / row.wall_s:>14.2f}  {row.note}")
