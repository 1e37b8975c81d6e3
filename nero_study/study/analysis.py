"""Robustness metrics of a learning-rate sweep, from finished trial records.

Input: trial records (mappings, objects with ``to_dict()`` such as ``TrialResult``, or a pandas DataFrame)
with ``task``, ``label`` (optimiser variant; ``optimizer`` when missing), ``optimizer``, ``lr``, ``seed``,
``status``, ``metric``, ``lower_is_better``, ``initial_metric`` and ``default_lr`` (per label; looked up in
the optimiser registry when missing). Only finished trials count (``succeeded``, ``diverged``, ``failed``);
pending, running and cancelled ones are ignored.

Conventions (all computed with lower = better; results are reported back in the task's orientation):

- ``m0(t)``, the metric at initialisation/chance: ``chance[t]`` when given, else the median of the finite
  ``initial_metric`` values of the task's trials, else the worst finite final metric of the task.
- A diverged or failed trial, or a succeeded one without a finite metric, counts as ``m0``.
- ``m(eta)`` is the mean over seeds at learning rate ``eta``; the grid G of a (task, optimiser) is the set of
  learning rates its finished trials ran (the spec's grid once the sweep is complete).
- ``best``/``eta_star``: min of m over G and its argmin (ties go to the smaller lr). ``best_std`` is the
  sample standard deviation (ddof=1) over seeds at eta_star: NaN with one seed.
- ``ootb``: m at the default lr (NaN if not run); ``ootb_regret = (ootb - best_all) / |best_all|`` (a
  fraction >= 0; 0 when both are 0, inf when only best_all is 0).
- ``lr_sensitivity``: mean over G of ``min(m, m0) - best``, in metric units, >= 0 (Wortsman et al. 2023).
- ``good_window``: the contiguous run of grid points around eta_star with ``m - best <= 0.1 (m0 - best)``,
  as (number of points) x (grid spacing), in decades. The spacing is the *median* of the gaps between
  consecutive grid points in log10, so one extra point (a default lr off a regular grid) does not change
  it. 0 when best is no better than m0 (nothing learnt); NaN for a one-point grid (no spacing).
- ``expected_best[k-1]``: the expected best m of k learning rates drawn uniformly with replacement from G
  (Sivaprasad et al. 2020), exact from order statistics: with m sorted ascending x_1 <= ... <= x_n,
  E = sum_i x_i [((n-i+1)/n)^k - ((n-i)/n)^k]. It uses m as it is (diverged counted as m0, not clamped).
- Performance profiles (AlgoPerf style), for the tuned best and for the out-of-the-box metric:
  ``r(t,o) = (m0 - best_all) / (m0 - m)``, inf when ``m >= m0`` or o did not run on t;
  ``rho_o(tau)`` = fraction of tasks with ``r <= tau``; ``score`` = mean of rho_o over tau in [1, tau_max]
  (tau_max = 4), computed exactly: ``score = sum_t max(0, tau_max - max(r, 1)) / (T (tau_max - 1))``.
  ``rho`` is also sampled on a grid of taus (step 0.01) for plotting.

``to_dict()`` results are JSON-safe (``nero_study.json_safe``): NaN and +/-inf become ``None``. A ``None``
ratio means no finite ratio: the optimiser never beat chance on that task, or did not run on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd

from nero_study.json_safe import json_safe

FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "diverged", "failed")
GOOD_WINDOW_FRACTION = 0.1
TAU_MAX = 4.0
_TAU_STEP = 0.01
_LR_REL_TOL = 1e-9
_REQUIRED = ("task", "lr", "status", "metric", "lower_is_better")

ProfileKind = Literal["ootb", "tuned"]


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LrPoint:
    """One learning rate of a (task, optimiser): mean and std over seeds, in the task's orientation."""

    lr: float
    mean: float
    std: float
    seeds: int
    diverged: int  # seeds that diverged or failed (counted as m0 in ``mean``)


@dataclass(frozen=True)
class OptimizerSummary:
    """The robustness metrics of one optimiser variant on one task (see the module docstring)."""

    task: str
    label: str
    optimizer: str
    metric_name: str
    lower_is_better: bool
    initial_metric: float  # m0, in the task's orientation
    default_lr: float
    best: float
    eta_star: float
    best_std: float
    best_seeds: int
    ootb: float
    ootb_regret: float
    lr_sensitivity: float
    good_window: float  # decades
    expected_best: tuple[float, ...]  # k = 1..|G|
    curve: tuple[LrPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class TaskSummary:
    """Per task: orientation, m0 and the best tuned metric over all optimisers (best_all)."""

    task: str
    metric_name: str
    lower_is_better: bool
    initial_metric: float
    best_all: float
    best_label: str | None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class PerformanceProfile:
    """A performance profile over tasks: ratios r[label][task], rho[label] sampled at ``taus``, scores."""

    kind: ProfileKind
    tau_max: float
    tasks: tuple[str, ...]
    labels: tuple[str, ...]
    ratios: dict[str, dict[str, float]]
    taus: tuple[float, ...]
    rho: dict[str, tuple[float, ...]]
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class SweepAnalysis:
    """Everything computed from a sweep's trials."""

    per_optimizer: tuple[OptimizerSummary, ...]
    tasks: tuple[TaskSummary, ...]
    profiles: dict[str, PerformanceProfile]  # "ootb" and "tuned"

    @property
    def expected_best(self) -> dict[str, dict[str, tuple[float, ...]]]:
        """expected_best[task][label] = (E best of k=1, ..., k=|G|), in the task's orientation."""
        result: dict[str, dict[str, tuple[float, ...]]] = {}
        for summary in self.per_optimizer:
            result.setdefault(summary.task, {})[summary.label] = summary.expected_best
        return result

    def summary(self, task: str, label: str) -> OptimizerSummary:
        """The summary of ``label`` on ``task``; a missing pair fails with the pairs there are."""
        for summary in self.per_optimizer:
            if summary.task == task and summary.label == label:
                return summary
        pairs = ", ".join(f"{s.task}/{s.label}" for s in self.per_optimizer)
        raise KeyError(f"No trials for optimizer {label!r} on task {task!r}; have: {pairs or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe nested dicts (NaN and +/-inf -> None)."""
        return {
            "per_optimizer": [s.to_dict() for s in self.per_optimizer],
            "tasks": [t.to_dict() for t in self.tasks],
            "profiles": {kind: p.to_dict() for kind, p in self.profiles.items()},
        }

    def summary_frame(self) -> pd.DataFrame:
        """One row per (task, optimiser) with the scalar metrics and both profile ratios."""
        scalar = [f.name for f in fields(OptimizerSummary) if f.name not in ("expected_best", "curve")]
        rows = []
        for s in self.per_optimizer:
            row = {name: getattr(s, name) for name in scalar}
            for kind, profile in self.profiles.items():
                row[f"{kind}_ratio"] = profile.ratios.get(s.label, {}).get(s.task, math.inf)
            rows.append(row)
        columns = [*scalar, *(f"{kind}_ratio" for kind in self.profiles)]
        return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class PaperTableRow:
    """One row of the paper's table: metric mean (``best``) ± std over seeds at the best lr (``eta_star``),
    and the out-of-the-box metric at the default lr, in the task's orientation."""

    task: str
    label: str
    metric_name: str
    best: float
    best_std: float
    seeds: int
    eta_star: float
    ootb: float
    default_lr: float

    @property
    def text(self) -> str:
        """``best ± std`` to 4 significant digits (just the mean when there is one seed)."""
        if math.isnan(self.best_std):
            return f"{self.best:.4g}"
        return f"{self.best:.4g} ± {self.best_std:.2g}"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "text": self.text})


# --- pure helpers -----------------------------------------------------------------------------------


def expected_best_of_k(values: Sequence[float], k: int) -> float:
    """Expected minimum of ``k`` draws, uniform with replacement, from ``values`` (exact)."""
    if k < 1:
        raise ValueError(f"Invalid k: {k}; k must be >= 1")
    ordered = np.sort(np.asarray(values, dtype=float))
    n = len(ordered)
    if n == 0:
        return math.nan
    remaining = np.arange(n, 0, -1) / n  # P(min index >= i) for one draw: (n - i) / n, i = 0..n-1
    weights = remaining**k - np.append(remaining[1:], 0.0) ** k
    return float(np.dot(weights, ordered))


def performance_ratio(m: float, m0: float, best_all: float) -> float:
    """AlgoPerf-style ratio ``(m0 - best_all) / (m0 - m)`` (lower is better); inf when m does not beat m0."""
    if not (math.isfinite(m) and math.isfinite(m0) and math.isfinite(best_all)) or m >= m0:
        return math.inf
    return (m0 - best_all) / (m0 - m)


def profile_score(ratios: Iterable[float], tau_max: float = TAU_MAX) -> float:
    """Mean of rho(tau) over tau in [1, tau_max], exactly: each task adds max(0, tau_max - max(r, 1))."""
    values = list(ratios)
    if not values:
        return math.nan
    covered = sum(max(0.0, tau_max - max(r, 1.0)) for r in values if r <= tau_max)
    return covered / (len(values) * (tau_max - 1.0))


# --- the analysis -----------------------------------------------------------------------------------


def _records(trials: Any) -> list[dict[str, Any]]:
    if isinstance(trials, pd.DataFrame):
        return trials.to_dict("records")
    rows = []
    for trial in trials:
        if isinstance(trial, Mapping):
            rows.append(dict(trial))
        elif hasattr(trial, "to_dict"):
            rows.append(dict(trial.to_dict()))
        else:
            raise TypeError(f"A trial record must be a mapping or have to_dict(); got {type(trial).__name__}")
    return rows


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _finite(value: Any) -> float:
    """``value`` as a float, NaN when it is missing or not finite."""
    if _is_missing(value):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def _registry_default_lr(optimizer: str) -> float:
    from nero_study.optim.registry import OPTIMIZERS

    info = OPTIMIZERS.get(optimizer)
    return info.default_lr if info is not None else math.nan


def _registry_lower_is_better(task: str) -> bool:
    # Only when no finished trial of the task says: ask the task itself (lower is better if unknown).
    from nero_study.tasks.registry import get_task

    try:
        return bool(get_task(task).lower_is_better)
    except Exception:  # noqa: BLE001 - an unknown or unimportable task: keep the default
        return True


def _sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _good_window(grid: list[float], means: list[float], star: int, best: float, m0: float) -> float:
    if not best < m0:
        return 0.0
    if len(grid) < 2:
        return math.nan
    threshold = GOOD_WINDOW_FRACTION * (m0 - best) * (1 + 1e-9)
    low = high = star
    while low > 0 and means[low - 1] - best <= threshold:
        low -= 1
    while high < len(grid) - 1 and means[high + 1] - best <= threshold:
        high += 1
    spacing = float(np.median(np.diff(np.log10(grid))))
    return (high - low + 1) * spacing


def _ootb_regret(ootb: float, best_all: float) -> float:
    if math.isnan(ootb) or math.isnan(best_all):
        return math.nan
    if best_all == 0:
        return 0.0 if ootb == 0 else math.inf
    return (ootb - best_all) / abs(best_all)


def analyze_sweep(
    trials: Any, *, chance: Mapping[str, float] | None = None, tau_max: float = TAU_MAX
) -> SweepAnalysis:
    """Compute a sweep's robustness metrics (conventions in the module docstring).

    ``trials``: records or a DataFrame (columns in the module docstring). ``chance``: m0 per task in the
    task's orientation, overriding the median initial metric. No finished trials give an empty analysis.
    """
    chance = dict(chance or {})
    all_rows = _records(trials)
    for row in all_rows:
        missing = [key for key in _REQUIRED if key not in row]
        if missing or not ("label" in row or "optimizer" in row):
            raise ValueError(
                f"A trial record lacks {', '.join(missing) or 'label/optimizer'}; records need "
                f"{', '.join(_REQUIRED)}, label or optimizer, and optionally seed, initial_metric, default_lr"
            )
    rows = [row for row in all_rows if row["status"] in FINISHED_STATUSES]

    # Per task: orientation and m0 (oriented so that lower is better).
    task_order: list[str] = list(dict.fromkeys(row["task"] for row in rows))
    sign: dict[str, float] = {}
    metric_name: dict[str, str] = {}
    for row in rows:
        task, lower = row["task"], row["lower_is_better"]
        if isinstance(row.get("metric_name"), str) and task not in metric_name:
            metric_name[task] = row["metric_name"]
        if _is_missing(lower):  # e.g. a trial that failed before its task was known
            continue
        row_sign = 1.0 if bool(lower) else -1.0
        if sign.setdefault(task, row_sign) != row_sign:
            raise ValueError(f"Task {task!r} has trials with different lower_is_better values")
    for task in task_order:
        if task not in sign:
            sign[task] = 1.0 if _registry_lower_is_better(task) else -1.0
    m0: dict[str, float] = {}
    for task in task_order:
        task_rows = [row for row in rows if row["task"] == task]
        if task in chance:
            m0[task] = sign[task] * float(chance[task])
            continue
        initial = [_finite(row.get("initial_metric")) for row in task_rows]
        initial = [value for value in initial if not math.isnan(value)]
        if initial:
            m0[task] = sign[task] * float(np.median(initial))
            continue
        finals = [sign[task] * _finite(row["metric"]) for row in task_rows if row["status"] == "succeeded"]
        finals = [value for value in finals if not math.isnan(value)]
        m0[task] = max(finals) if finals else math.nan

    # Per (task, label): oriented values per lr.
    pair_order: list[tuple[str, str]] = []
    per_lr: dict[tuple[str, str], dict[float, list[float]]] = {}
    failed: dict[tuple[str, str], dict[float, int]] = {}
    optimizer_of: dict[tuple[str, str], str] = {}
    default_of: dict[tuple[str, str], float] = {}
    for row in rows:
        task = row["task"]
        optimizer = row.get("optimizer")
        optimizer = "" if _is_missing(optimizer) else str(optimizer)
        label = row.get("label")
        label = optimizer if _is_missing(label) or label == "" else str(label)
        key = (task, label)
        if key not in per_lr:
            pair_order.append(key)
            per_lr[key], failed[key] = {}, {}
            optimizer_of[key] = optimizer
            default = _finite(row.get("default_lr"))
            default_of[key] = default if not math.isnan(default) else _registry_default_lr(optimizer)
        metric = _finite(row["metric"])
        ok = row["status"] == "succeeded" and not math.isnan(metric)
        lr = float(row["lr"])
        per_lr[key].setdefault(lr, []).append(sign[task] * metric if ok else m0[task])
        failed[key][lr] = failed[key].get(lr, 0) + (0 if ok else 1)

    # First pass: best per pair, then best_all per task.
    oriented: dict[tuple[str, str], tuple[list[float], list[float], int]] = {}
    for key in pair_order:
        grid = sorted(per_lr[key])
        means = [float(np.mean(per_lr[key][lr])) for lr in grid]
        star = min(range(len(grid)), key=lambda i: (means[i], grid[i]))
        oriented[key] = (grid, means, star)
    best_all: dict[str, float] = {}
    best_label: dict[str, str | None] = {}
    for task in task_order:
        candidates = [(oriented[key][1][oriented[key][2]], key[1]) for key in pair_order if key[0] == task]
        value, label = min(candidates, key=lambda c: c[0])
        best_all[task], best_label[task] = value, label

    summaries = []
    for key in pair_order:
        task, label = key
        s, zero = sign[task], m0[task]
        grid, means, star = oriented[key]
        best = means[star]
        default = default_of[key]
        ootb_index = next(
            (i for i, lr in enumerate(grid) if math.isclose(lr, default, rel_tol=_LR_REL_TOL)), None
        )
        ootb = means[ootb_index] if ootb_index is not None else math.nan
        sensitivity = float(np.mean([float(np.fmin(m, zero)) - best for m in means]))
        curve = tuple(
            LrPoint(
                lr=lr,
                mean=s * means[i],
                std=_sample_std(per_lr[key][lr]),
                seeds=len(per_lr[key][lr]),
                diverged=failed[key][lr],
            )
            for i, lr in enumerate(grid)
        )
        summaries.append(
            OptimizerSummary(
                task=task,
                label=label,
                optimizer=optimizer_of[key],
                metric_name=metric_name.get(task, ""),
                lower_is_better=s > 0,
                initial_metric=s * zero,
                default_lr=default,
                best=s * best,
                eta_star=grid[star],
                best_std=_sample_std(per_lr[key][grid[star]]),
                best_seeds=len(per_lr[key][grid[star]]),
                ootb=s * ootb,
                ootb_regret=_ootb_regret(ootb, best_all[task]),
                lr_sensitivity=sensitivity,
                good_window=_good_window(grid, means, star, best, zero),
                expected_best=tuple(s * expected_best_of_k(means, k) for k in range(1, len(grid) + 1)),
                curve=curve,
            )
        )

    tasks = tuple(
        TaskSummary(
            task=task,
            metric_name=metric_name.get(task, ""),
            lower_is_better=sign[task] > 0,
            initial_metric=sign[task] * m0[task],
            best_all=sign[task] * best_all[task],
            best_label=best_label[task],
        )
        for task in task_order
    )
    labels = tuple(dict.fromkeys(label for _, label in pair_order))
    oriented_summary = {(s.task, s.label): s for s in summaries}
    profiles = {}
    for kind in ("ootb", "tuned"):
        ratios: dict[str, dict[str, float]] = {}
        for label in labels:
            ratios[label] = {}
            for task in task_order:
                summary = oriented_summary.get((task, label))
                value = math.nan if summary is None else (summary.ootb if kind == "ootb" else summary.best)
                ratios[label][task] = performance_ratio(sign[task] * value, m0[task], best_all[task])
        profiles[kind] = _profile(kind, tuple(task_order), labels, ratios, tau_max)  # type: ignore[arg-type]
    return SweepAnalysis(per_optimizer=tuple(summaries), tasks=tasks, profiles=profiles)


def _profile(
    kind: ProfileKind,
    tasks: tuple[str, ...],
    labels: tuple[str, ...],
    ratios: dict[str, dict[str, float]],
    tau_max: float,
) -> PerformanceProfile:
    steps = round((tau_max - 1.0) / _TAU_STEP)
    taus = tuple(float(t) for t in np.linspace(1.0, tau_max, steps + 1))
    rho = {
        label: tuple(
            sum(1 for r in ratios[label].values() if r <= tau) / len(tasks) for tau in taus
        )
        for label in labels
    }
    scores = {label: profile_score(ratios[label].values(), tau_max) for label in labels}
    return PerformanceProfile(
        kind=kind, tau_max=tau_max, tasks=tasks, labels=labels, ratios=ratios, taus=taus, rho=rho,
        scores=scores,
    )


def paper_table(analysis: SweepAnalysis) -> list[PaperTableRow]:
    """The paper's comparison per task and optimiser: mean ± std at the best lr, and the ootb metric."""
    return [
        PaperTableRow(
            task=s.task,
            label=s.label,
            metric_name=s.metric_name,
            best=s.best,
            best_std=s.best_std,
            seeds=s.best_seeds,
            eta_star=s.eta_star,
            ootb=s.ootb,
            default_lr=s.default_lr,
        )
        for s in analysis.per_optimizer
    ]


__all__ = [
    "FINISHED_STATUSES",
    "LrPoint",
    "OptimizerSummary",
    "PaperTableRow",
    "PerformanceProfile",
    "SweepAnalysis",
    "TaskSummary",
    "analyze_sweep",
    "expected_best_of_k",
    "paper_table",
    "performance_ratio",
    "profile_score",
]
