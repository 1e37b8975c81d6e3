"""Robustness metrics of a learning-rate sweep, from finished trial records.

Input: trial records (mappings, objects with ``to_dict()`` such as ``TrialResult``, or a pandas DataFrame)
with ``task``, ``label`` (optimiser variant; ``optimizer`` when missing), ``optimizer``, ``lr``, ``seed``,
``status``, ``metric``, ``lower_is_better``, ``initial_metric`` and ``default_lr`` (per label; looked up in
the optimiser registry when missing). Only ``succeeded`` and ``diverged`` trials enter the metrics. A
``failed`` trial (out of memory, a bug, missing data) is no evidence about its learning rate: it is left out
of every metric and counted (``LrPoint.failed``, ``OptimizerSummary.failed``, ``SweepAnalysis.failed_trials``)
so that every view can say so beside the numbers. Pending, running and cancelled trials are ignored.

Conventions (all computed with lower = better; results are reported back in the task's orientation):

- ``m0(t)``, the metric at initialisation/chance: ``chance[t]`` when given, else the median of the finite
  ``initial_metric`` values of the task's trials, else the worst finite final metric of the task.
- A diverged trial, or a succeeded one without a finite metric, counts as ``m0``.
- ``m(eta)`` is the mean over seeds at learning rate ``eta``; the grid G of a (task, optimiser) is the set of
  learning rates its succeeded or diverged trials ran (the spec's grid once the sweep is complete). The
  ``curve`` also lists an lr whose trials all failed (mean NaN, ``seeds`` 0), so a figure can mark it.
- ``best``/``eta_star`` depend on the protocol (``resolve_protocol``: given, or read from the trials' phases):

  * ``paper``: eta_star is the lr chosen at the first seed (phase 1, ``phase == "grid"``), the lr that was
    repeated with the other seeds; ``best`` and ``best_std`` are over all the repeats at that lr. A one-seed
    lr never replaces it.
  * ``grid``, ``bracket`` and ``tpe``: eta_star is the argmin of m over the lrs run with the same seeds (the
    seed set with the most seeds; then the one shared by the most lrs), so a one-seed lr never beats a
    several-seed mean.

  Ties go to the smaller lr. ``best_std`` is the sample standard deviation (ddof=1) over the seeds at
  eta_star: NaN with one seed.
- ``ootb``: m at the default lr (NaN if not run); ``ootb_regret = (ootb - best_all) / (m0 - best_all)``, the
  regret on the normalised scale of the heatmap (normalised score 0 = chance/initial, 1 = best of all; the
  regret is 1 - score): 0 at the best of all optimisers, 1 at chance; an ootb worse than chance is capped at
  chance (1), as a divergence is. It is the same for every metric kind and does not move when a metric is
  shifted (returns crossing zero). NaN when nothing beat chance on the task (m0 == best_all).
- Grid metrics (lr sensitivity, good window, expected best of k) are computed on the *common grid* C of the
  task (``TaskSummary.common_grid``): the lrs every optimiser of the task ran, so that an optimiser is not
  scored on its own grid (a default lr added to one grid only). The out-of-the-box point is reported on its
  own (``ootb``); ``OptimizerSummary.grid_metrics_note`` says when an optimiser's grid is larger than C. On
  C, each value is clamped to chance, ``c(eta) = min(m(eta), m0)`` (a finished run worse than chance counts
  like a divergence), and ``best_C = min c``. Under ``paper`` they use the first seed's values only (the
  only seed every lr ran). Under ``tpe`` they are not defined (TPE's lrs are samples, not a grid): NaN, with
  the reason in ``grid_metrics_note``.
- ``lr_sensitivity``: mean over C of ``c - best_C``, in metric units, >= 0 (Wortsman et al. 2023).
- ``good_window``: the contiguous run of points of C around its argmin with ``c - best_C <= 0.1 (m0 -
  best_C)``, as (number of points) x (grid spacing), in decades: each good point stands for one spacing (half
  a spacing either side), so a single good point is one spacing wide. ``good_window_lrs`` gives the lowest
  and highest good lr. The spacing is the *median* of the gaps between consecutive points in log10. 0 when
  best_C is no better than m0 (nothing learnt); NaN for a one-point grid (no spacing).
- ``expected_best[k-1]``: the expected best c of k learning rates drawn uniformly with replacement from C
  (Sivaprasad et al. 2020), exact from order statistics: with c sorted ascending x_1 <= ... <= x_n,
  E = sum_i x_i [((n-i+1)/n)^k - ((n-i)/n)^k].
- Performance profiles (Dolan & More 2002, "Benchmarking optimization software with performance profiles",
  Math. Program. 91), for the tuned best and for the out-of-the-box metric. The ratio depends on the task's
  metric kind (``PerformanceProfile.ratio_kinds``):

  * ``cost ratio`` (a lower-is-better metric whose best value is > 0: error, perplexity, FID):
    Dolan & More's ``r(t,o) = m / best_all``. A ratio of 2 means twice the best optimiser's error (or
    perplexity, FID).
  * ``gain ratio`` (a higher-is-better metric, or one whose best is <= 0, such as returns that cross zero):
    cost ratios are meaningless there, so the ratio is of gains over chance, ``r = (m0 - best_all) /
    (m0 - m)`` = 1 / normalised score, the chance-normalised scale of the Atari human-normalised score (Mnih
    et al. 2015, Nature 518) and of this project's heatmap. A ratio of 2 means half the best optimiser's
    improvement over chance (e.g. Pong from -21: the best reaches 20, a gain of 41; ratio 2 is a gain of 20.5).

  Either way ``r`` is inf when ``m >= m0`` (no better than chance: a failure, Dolan & More's r_M) or o did
  not run on t; ``rho_o(tau)`` = fraction of tasks with ``r <= tau``; ``score`` = mean of rho_o over tau in [1, tau_max]
  (tau_max = 4), computed exactly: ``score = sum_t max(0, tau_max - max(r, 1)) / (T (tau_max - 1))``.
  ``rho`` is also sampled on a grid of taus (step 0.01) for plotting.

Uncertainty across seeds:

- ``best_ci``: the 95% Student-t interval of the mean over the seeds at eta_star,
  ``mean ± t_{0.975, n-1} s / sqrt(n)`` (NaN with one seed: "1 seed: no interval").
- ``binomial_se``: for a task whose metric is an error rate on a test set of n examples (the task declares
  ``metric_is_error_rate`` and ``test_set_size``; digits: 357 images, so one image is 0.28 points), the
  binomial standard error ``sqrt(p (1 - p) / n)`` of one run's error p = best. NaN otherwise.
- ``comparisons``: per task, the best optimiser (best_label) against each other one, paired over the seeds
  both ran at their eta_star: the mean difference d (oriented so that d > 0 means worse than the best) and
  its 95% t-interval. ``distinguishable`` is True when the interval excludes 0, False when it does not, None
  with fewer than two paired seeds. The tables' "is best" star goes to the best and to every optimiser not
  distinguishable from it (with one seed, only to the best: nothing can be told apart).

``to_dict()`` results are JSON-safe (``nero_study.json_safe``): NaN and +/-inf become ``None``. A ``None``
ratio means no finite ratio: the optimiser never beat chance on that task, or did not run on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from nero_study.json_safe import json_safe
from nero_study.vocabulary import PROTOCOLS, bracket_round, same_lr

FINISHED_STATUSES: tuple[str, ...] = ("succeeded", "diverged", "failed")
GOOD_WINDOW_FRACTION = 0.1
TAU_MAX = 4.0
_TAU_STEP = 0.01
TPE_NOTE = "not defined for TPE: its learning rates are samples, not a grid"
NO_COMMON_GRID_NOTE = "not defined: no learning rate is common to all optimisers of the task"
_REQUIRED = ("task", "lr", "status", "metric", "lower_is_better")

ProfileKind = Literal["ootb", "tuned"]


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LrPoint:
    """One learning rate of a (task, optimiser): mean and std over seeds, in the task's orientation."""

    lr: float
    mean: float
    std: float
    seeds: int  # seeds in ``mean`` (succeeded or diverged; failed trials are left out)
    diverged: int  # seeds that diverged (counted as m0 in ``mean``)
    failed: int = 0  # failed trials at this lr, left out of ``mean``


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
    expected_best: tuple[float, ...]  # k = 1..|common grid|
    curve: tuple[LrPoint, ...]
    failed: int = 0  # failed trials of this (task, optimiser), left out of every metric
    best_ci: tuple[float, float] = (math.nan, math.nan)  # 95% t-interval over the seeds at eta_star
    binomial_se: float = math.nan  # error-rate metrics on a known test-set size: sqrt(p (1 - p) / n)
    good_window_lrs: tuple[float, float] = (math.nan, math.nan)  # the window's lowest and highest good lr
    grid_metrics_note: str | None = None  # why the grid metrics are null, or the grid they were computed on
    protocol: str = "grid"

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
    common_grid: tuple[float, ...] = ()  # the lrs every optimiser of the task ran (the grid metrics' G)

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
    ratio_kinds: dict[str, str]  # per task: "cost ratio" or "gain ratio" (module docstring)
    taus: tuple[float, ...]
    rho: dict[str, tuple[float, ...]]
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class SeedComparison:
    """The best optimiser of a task against another, paired over the seeds both ran at their eta_star."""

    task: str
    best_label: str
    label: str
    seeds: int  # paired seeds
    difference: float  # mean of (label - best) per seed, > 0: worse than the best (task units)
    ci_low: float  # 95% t-interval of the difference, in the same orientation
    ci_high: float
    distinguishable: bool | None  # the interval excludes 0; None with fewer than two paired seeds

    @property
    def text(self) -> str:
        if self.distinguishable is None:
            return f"{self.seeds} seed: no interval" if self.seeds == 1 else "no paired seeds: no interval"
        verdict = "behind the best" if self.distinguishable else "not distinguishable from the best"
        return (
            f"{verdict}: by {self.difference:.3g} (95% CI {self.ci_low:.3g} to {self.ci_high:.3g}, "
            f"{self.seeds} paired seeds)"
        )

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "text": self.text})


@dataclass(frozen=True)
class SweepAnalysis:
    """Everything computed from a sweep's trials."""

    per_optimizer: tuple[OptimizerSummary, ...]
    tasks: tuple[TaskSummary, ...]
    profiles: dict[str, PerformanceProfile]  # "ootb" and "tuned"
    failed_trials: int = 0  # failed trials left out of every metric (module docstring)
    comparisons: tuple[SeedComparison, ...] = ()

    def comparison(self, task: str, label: str) -> SeedComparison | None:
        """The paired comparison of ``label`` with the best on ``task`` (None for the best itself)."""
        return next((c for c in self.comparisons if c.task == task and c.label == label), None)

    def is_best(self, task: str, label: str) -> bool:
        """The best of the task, or not distinguishable from it across seeds (module docstring)."""
        best = next((t.best_label for t in self.tasks if t.task == task), None)
        if label == best:
            return True
        comparison = self.comparison(task, label)
        return comparison is not None and comparison.distinguishable is False

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
            "failed_trials": self.failed_trials,
            "comparisons": [c.to_dict() for c in self.comparisons],
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
    ci_low: float = math.nan  # 95% t-interval over seeds at eta_star
    ci_high: float = math.nan
    binomial_se: float = math.nan
    is_best: bool = False  # the best, or not distinguishable from it across seeds
    comparison: str = ""  # the paired comparison with the best ("" for the best itself)

    @property
    def text(self) -> str:
        """``best ± std`` to 4 significant digits (just the mean when there is one seed)."""
        if math.isnan(self.best_std):
            return f"{self.best:.4g}"
        return f"{self.best:.4g} ± {self.best_std:.2g}"

    @property
    def interval_text(self) -> str:
        """The 95% t-interval over seeds, or why there is none."""
        if math.isnan(self.ci_low):
            return f"{self.seeds} seed: no interval" if self.seeds == 1 else "no interval"
        return f"[{self.ci_low:.4g}, {self.ci_high:.4g}] (95% t, {self.seeds} seeds)"

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "text": self.text, "interval_text": self.interval_text})


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


COST_RATIO = "cost ratio"
GAIN_RATIO = "gain ratio"


def ratio_kind(*, lower_is_better: bool, best_all: float) -> str:
    """``cost ratio`` for a lower-is-better metric whose best is > 0, else ``gain ratio`` (module docstring)."""
    return COST_RATIO if lower_is_better and best_all > 0 else GAIN_RATIO


def performance_ratio(m: float, m0: float, best_all: float, kind: str = GAIN_RATIO) -> float:
    """The profile ratio of oriented (lower = better) values: ``m / best_all`` (cost ratio, positive
    lower-is-better metrics) or ``(m0 - best_all) / (m0 - m)`` (gain ratio); inf when m does not beat m0."""
    if kind not in (COST_RATIO, GAIN_RATIO):
        raise ValueError(f"Invalid ratio kind: {kind!r}; valid: {COST_RATIO!r}, {GAIN_RATIO!r}")
    if not (math.isfinite(m) and math.isfinite(m0) and math.isfinite(best_all)) or m >= m0:
        return math.inf
    if kind == COST_RATIO:
        if best_all <= 0:
            raise ValueError(f"A cost ratio needs a positive best value; got {best_all}")
        return m / best_all
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
        # Column by column: ``to_dict("records")`` boxes every cell on its own, 3-4x slower for a big sweep's
        # string columns (10,000 trials: ~0.7 s against ~0.2 s); the values are the same Python objects.
        columns = [str(column) for column in trials.columns]
        values = [trials[column].tolist() for column in trials.columns]
        return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
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


def _orient_tasks(
    finished: Iterable[tuple[Any, Any, Any]], task_order: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """Per task, the sign that makes lower better (+1 or -1) and the metric's name, from the finished trials'
    ``(task, lower_is_better, metric_name)``; a task none of whose trials says gets its registry's orientation.
    Raises ``ValueError`` when a task's trials disagree."""
    sign: dict[str, float] = {}
    metric_name: dict[str, str] = {}
    for task, lower, name in finished:
        if isinstance(name, str) and task not in metric_name:
            metric_name[task] = name
        if _is_missing(lower):  # e.g. a trial that failed before its task was known
            continue
        row_sign = 1.0 if bool(lower) else -1.0
        if sign.setdefault(task, row_sign) != row_sign:
            raise ValueError(f"Task {task!r} has trials with different lower_is_better values")
    for task in task_order:
        if task not in sign:
            sign[task] = 1.0 if _registry_lower_is_better(task) else -1.0
    return sign, metric_name


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


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The Student-t interval of the mean of ``values`` at ``level``; (NaN, NaN) with fewer than two."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(np.mean(values))
    half = _t_quantile(0.5 + level / 2, n - 1) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


@functools.lru_cache(maxsize=1024)
def _t_quantile(probability: float, degrees: int) -> float:
    """Student's t quantile (scipy's ``t.ppf``), kept per (probability, degrees of freedom): a sweep asks for
    the same few values once per optimiser and comparison, and each scipy call costs about a millisecond."""
    from scipy import stats

    return float(stats.t.ppf(probability, degrees))


def binomial_standard_error(error_rate: float, test_set_size: int) -> float:
    """``sqrt(p (1 - p) / n)``: the standard error of an error rate p measured on n test examples."""
    if test_set_size < 1:
        raise ValueError(f"Invalid test_set_size: {test_set_size}; must be >= 1")
    if not 0.0 <= error_rate <= 1.0:
        return math.nan
    return math.sqrt(error_rate * (1.0 - error_rate) / test_set_size)


def _registry_error_rate(task: str) -> tuple[bool, int | None]:
    from nero_study.tasks.registry import get_task

    try:
        found = get_task(task)
    except Exception:  # noqa: BLE001 - an unknown or unimportable task: not known to be an error rate
        return False, None
    return bool(getattr(found, "metric_is_error_rate", False)), getattr(found, "test_set_size", None)


def _sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _label(row: Mapping[str, Any]) -> str:
    optimizer = row.get("optimizer")
    optimizer = "" if _is_missing(optimizer) else str(optimizer)
    label = row.get("label")
    return optimizer if _is_missing(label) or label == "" else str(label)


def resolve_protocol(rows: Iterable[Mapping[str, Any]], protocol: str | None = None) -> str:
    """The protocol the trials ran under: ``protocol`` when given, else read from their phases (``seeds``
    trials: paper; ``tpe`` trials: tpe; ``bracket-N`` trials: bracket; otherwise grid)."""
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"Invalid protocol: {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        return protocol
    phases = {row.get("phase") for row in rows}
    if "tpe" in phases:
        return "tpe"
    if any(bracket_round(phase) is not None for phase in phases):
        return "bracket"
    return "paper" if "seeds" in phases else "grid"


@dataclass(frozen=True)
class _Choice:
    values: dict[float, float]  # oriented value per lr that the grid metrics use
    eta_star: float
    best: float  # oriented mean over the repeats at eta_star
    best_values: list[float]
    best_points: list[tuple[int | None, float]]  # (seed, oriented value) at eta_star


def _choose(per_lr: dict[float, list[tuple[int | None, float]]], protocol: str, first_seed: int | None) -> _Choice:
    """eta_star and the values the grid metrics use, under the protocol's rule (module docstring)."""
    if protocol == "paper" and first_seed is not None:
        values = {
            lr: float(np.mean(at_first))
            for lr, points in per_lr.items()
            if (at_first := [v for seed, v in points if seed == first_seed])
        }
        eligible = sorted(values)
    else:
        values = {lr: float(np.mean([v for _, v in points])) for lr, points in per_lr.items()}
        # Compare only lrs run with the same seeds: the seed set with the most seeds (then the most lrs).
        seed_sets = {lr: tuple(sorted(str(seed) for seed, _ in points)) for lr, points in per_lr.items()}
        groups: dict[tuple[str, ...], list[float]] = {}
        for lr, seeds in seed_sets.items():
            groups.setdefault(seeds, []).append(lr)
        widest = max(groups, key=lambda seeds: (len(seeds), len(groups[seeds])))
        eligible = sorted(groups[widest])
    eta_star = min(eligible, key=lambda lr: (values[lr], lr))
    best_values = [v for _, v in per_lr[eta_star]]
    return _Choice(
        values=values,
        eta_star=eta_star,
        best=float(np.mean(best_values)),
        best_values=best_values,
        best_points=list(per_lr[eta_star]),
    )


@dataclass(frozen=True)
class _GridMetrics:
    sensitivity: float
    window: float
    window_lrs: tuple[float, float]
    expected_best: tuple[float, ...]
    note: str | None


def _grid_metrics(values: dict[float, float], common: tuple[float, ...], m0: float, protocol: str) -> _GridMetrics:
    """lr sensitivity, good window and expected best of k on the common grid, values clamped to m0."""
    if protocol == "tpe":
        return _GridMetrics(math.nan, math.nan, (math.nan, math.nan), (), TPE_NOTE)
    if not common:
        return _GridMetrics(math.nan, math.nan, (math.nan, math.nan), (), NO_COMMON_GRID_NOTE)
    own = sorted(values)
    on_common = [next(values[x] for x in own if same_lr(lr, x)) for lr in common]
    clamped = [float(np.fmin(value, m0)) for value in on_common]
    best = min(clamped)
    sensitivity = float(np.mean([value - best for value in clamped]))
    expected = tuple(expected_best_of_k(clamped, k) for k in range(1, len(clamped) + 1))
    note = None if len(own) == len(common) else f"on the {len(common)} learning rates common to all optimisers"
    grid = list(common)
    if not best < m0:
        return _GridMetrics(sensitivity, 0.0, (math.nan, math.nan), expected, note)
    if len(grid) < 2:
        return _GridMetrics(sensitivity, math.nan, (grid[0], grid[0]), expected, note)
    star = min(range(len(grid)), key=lambda i: (clamped[i], grid[i]))
    threshold = GOOD_WINDOW_FRACTION * (m0 - best) * (1 + 1e-9)
    low = high = star
    while low > 0 and clamped[low - 1] - best <= threshold:
        low -= 1
    while high < len(grid) - 1 and clamped[high + 1] - best <= threshold:
        high += 1
    spacing = float(np.median(np.diff(np.log10(grid))))
    return _GridMetrics(sensitivity, (high - low + 1) * spacing, (grid[low], grid[high]), expected, note)


def normalised_regret(m: float, m0: float, best_all: float) -> float:
    """``(m - best_all) / (m0 - best_all)`` of oriented values: 0 at the best, 1 at chance; NaN when undefined."""
    if not (math.isfinite(m) and math.isfinite(m0) and math.isfinite(best_all)) or not best_all < m0:
        return math.nan
    return (m - best_all) / (m0 - best_all)


class _Gathered(NamedTuple):
    """What :func:`analyze_sweep` reads from the trials, before any metric (see its body for each part)."""

    protocol: str
    task_order: list[str]
    sign: dict[str, float]
    metric_name: dict[str, str]
    m0: dict[str, float]
    error_rates: dict[str, tuple[bool, int | None]]
    pair_order: list[tuple[str, str]]
    per_lr: dict[tuple[str, str], dict[float, list[tuple[int | None, float]]]]
    diverged: dict[tuple[str, str], dict[float, int]]
    optimizer_of: dict[tuple[str, str], str]
    default_of: dict[tuple[str, str], float]
    first_seed: dict[tuple[str, str], int | None]
    failed_at: dict[tuple[str, str], dict[float, int]]
    failed_trials: int


def _gather_records(all_rows: list[dict[str, Any]], chance: dict[str, float], protocol: str | None) -> _Gathered:
    """The trials' orientation, m0, and oriented values per (task, label) and lr, one record at a time."""
    for row in all_rows:
        missing = [key for key in _REQUIRED if key not in row]
        if missing or not ("label" in row or "optimizer" in row):
            raise ValueError(
                f"A trial record lacks {', '.join(missing) or 'label/optimizer'}; records need "
                f"{', '.join(_REQUIRED)}, label or optimizer, and optionally seed, initial_metric, default_lr"
            )
    finished = [row for row in all_rows if row["status"] in FINISHED_STATUSES]
    rows = [row for row in finished if row["status"] != "failed"]
    resolved = resolve_protocol(rows, protocol)

    # Per task: orientation and m0 (oriented so that lower is better).
    task_order: list[str] = list(dict.fromkeys(row["task"] for row in rows))
    sign, metric_name = _orient_tasks(
        ((row["task"], row["lower_is_better"], row.get("metric_name")) for row in finished), task_order
    )
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

    error_rates: dict[str, tuple[bool, int | None]] = {}
    for task in task_order:
        declared = [row for row in rows if row["task"] == task and not _is_missing(row.get("test_set_size"))]
        if declared:  # results from elsewhere declare it per row
            flag = declared[0].get("metric_is_error_rate")
            error_rates[task] = (True if _is_missing(flag) else bool(flag), int(declared[0]["test_set_size"]))
        else:
            error_rates[task] = _registry_error_rate(task)

    # Per (task, label): oriented values per lr and seed (failed trials left out, counted).
    pair_order: list[tuple[str, str]] = []
    per_lr: dict[tuple[str, str], dict[float, list[tuple[int | None, float]]]] = {}
    diverged: dict[tuple[str, str], dict[float, int]] = {}
    optimizer_of: dict[tuple[str, str], str] = {}
    default_of: dict[tuple[str, str], float] = {}
    first_seed: dict[tuple[str, str], int | None] = {}
    for row in rows:
        task = row["task"]
        key = (task, _label(row))
        if key not in per_lr:
            pair_order.append(key)
            per_lr[key], diverged[key] = {}, {}
            optimizer = row.get("optimizer")
            optimizer_of[key] = "" if _is_missing(optimizer) else str(optimizer)
            default = _finite(row.get("default_lr"))
            default_of[key] = default if not math.isnan(default) else _registry_default_lr(optimizer_of[key])
        metric = _finite(row["metric"])
        ok = row["status"] == "succeeded" and not math.isnan(metric)
        lr = float(row["lr"])
        seed = None if _is_missing(row.get("seed")) else int(row["seed"])
        per_lr[key].setdefault(lr, []).append((seed, sign[task] * metric if ok else m0[task]))
        diverged[key][lr] = diverged[key].get(lr, 0) + (0 if ok else 1)
        phase = row.get("phase")
        if seed is not None and (_is_missing(phase) or phase == "grid"):  # phase 1 of the paper protocol
            previous = first_seed.get(key)
            first_seed[key] = seed if previous is None else min(seed, previous)
    failed_at: dict[tuple[str, str], dict[float, int]] = {}
    for row in finished:
        if row["status"] == "failed":
            by_lr = failed_at.setdefault((row["task"], _label(row)), {})
            by_lr[float(row["lr"])] = by_lr.get(float(row["lr"]), 0) + 1

    failed_trials = sum(1 for row in finished if row["status"] == "failed")
    return _Gathered(
        resolved, task_order, sign, metric_name, m0, error_rates, pair_order, per_lr, diverged, optimizer_of,
        default_of, first_seed, failed_at, failed_trials,
    )  # fmt: skip


#: The columns of a trials frame that the analysis reads (the others are left unread).
_READ_COLUMNS = (
    *_REQUIRED, "label", "optimizer", "seed", "initial_metric", "default_lr", "metric_name", "phase",
    "test_set_size", "metric_is_error_rate",
)  # fmt: skip


def _gather_columns(frame: pd.DataFrame, chance: dict[str, float], protocol: str | None) -> _Gathered:
    """:func:`_gather_records` of a DataFrame's rows, read column by column: the same Python values as the
    frame's records (``Series.tolist()``), the same steps in the same order, without a dict per row, and with
    the rows grouped by task once (a big sweep has 10,000 rows)."""
    present = {str(name): name for name in frame.columns if str(name) in _READ_COLUMNS}
    if len(frame):
        missing = [key for key in _REQUIRED if key not in present]
        if missing or not ("label" in present or "optimizer" in present):
            raise ValueError(
                f"A trial record lacks {', '.join(missing) or 'label/optimizer'}; records need "
                f"{', '.join(_REQUIRED)}, label or optimizer, and optionally seed, initial_metric, default_lr"
            )
    count = len(frame)

    def column(name: str) -> list[Any]:
        return frame[present[name]].tolist() if name in present else [None] * count

    status, task_of = column("status"), column("task")
    finished = [i for i, value in enumerate(status) if value in FINISHED_STATUSES]
    rows = [i for i in finished if status[i] != "failed"]
    phase = column("phase")
    resolved = resolve_protocol([{"phase": value} for value in {phase[i] for i in rows}], protocol)

    # Per task: orientation and m0 (oriented so that lower is better).
    task_order: list[str] = list(dict.fromkeys(task_of[i] for i in rows))
    lower_of, name_of = column("lower_is_better"), column("metric_name")
    isnan, isfinite = math.isnan, math.isfinite
    sign, metric_name = _orient_tasks(((task_of[i], lower_of[i], name_of[i]) for i in finished), task_order)
    rows_of: dict[Any, list[int]] = {task: [] for task in task_order}
    for i in rows:
        rows_of[task_of[i]].append(i)
    metric_of, initial_of = column("metric"), column("initial_metric")
    m0: dict[str, float] = {}
    for task in task_order:
        if task in chance:
            m0[task] = sign[task] * float(chance[task])
            continue
        initial = [
            v if v.__class__ is float and isfinite(v) else _finite(v)
            for v in map(initial_of.__getitem__, rows_of[task])
        ]
        initial = [value for value in initial if not math.isnan(value)]
        if initial:
            m0[task] = sign[task] * float(np.median(initial))
            continue
        finals = [sign[task] * _finite(metric_of[i]) for i in rows_of[task] if status[i] == "succeeded"]
        finals = [value for value in finals if not math.isnan(value)]
        m0[task] = max(finals) if finals else math.nan

    error_rates: dict[str, tuple[bool, int | None]] = {}
    size_of, flag_of = column("test_set_size"), column("metric_is_error_rate")
    for task in task_order:
        declared = None
        if "test_set_size" in present:
            declared = next((i for i in rows_of[task] if not _is_missing(size_of[i])), None)
        if declared is not None:  # results from elsewhere declare it per row
            flag = flag_of[declared]
            error_rates[task] = (True if _is_missing(flag) else bool(flag), int(size_of[declared]))
        else:
            error_rates[task] = _registry_error_rate(task)

    # Per (task, label): oriented values per lr and seed (failed trials left out, counted).
    label_of, optimizer_col, default_col = column("label"), column("optimizer"), column("default_lr")
    lr_of, seed_of = column("lr"), column("seed")
    labels: dict[tuple[type, Any, type, Any], str] = {}

    def label(i: int) -> str:
        optimizer, name = optimizer_col[i], label_of[i]
        known = (type(optimizer), optimizer, type(name), name)
        found = labels.get(known)
        if found is None:
            found = labels[known] = _label({"optimizer": optimizer, "label": name})
        return found

    pair_order: list[tuple[str, str]] = []
    per_lr: dict[tuple[str, str], dict[float, list[tuple[int | None, float]]]] = {}
    diverged: dict[tuple[str, str], dict[float, int]] = {}
    optimizer_of: dict[tuple[str, str], str] = {}
    default_of: dict[tuple[str, str], float] = {}
    first_seed: dict[tuple[str, str], int | None] = {}
    for i in rows:
        task = task_of[i]
        key = (task, label(i))
        if key not in per_lr:
            pair_order.append(key)
            per_lr[key], diverged[key] = {}, {}
            optimizer = optimizer_col[i]
            optimizer_of[key] = "" if _is_missing(optimizer) else str(optimizer)
            default = _finite(default_col[i])
            default_of[key] = default if not isnan(default) else _registry_default_lr(optimizer_of[key])
        metric = metric_of[i]
        metric = metric if metric.__class__ is float and isfinite(metric) else _finite(metric)
        ok = status[i] == "succeeded" and not isnan(metric)
        lr = float(lr_of[i])
        raw_seed = seed_of[i]
        seed = None if raw_seed is None or (isinstance(raw_seed, float) and isnan(raw_seed)) else int(raw_seed)
        per_lr[key].setdefault(lr, []).append((seed, sign[task] * metric if ok else m0[task]))
        counts = diverged[key]
        counts[lr] = counts.get(lr, 0) + (0 if ok else 1)
        row_phase = phase[i]
        unset = row_phase is None or (isinstance(row_phase, float) and isnan(row_phase))
        if seed is not None and (unset or row_phase == "grid"):  # phase 1 of the paper protocol
            previous = first_seed.get(key)
            first_seed[key] = seed if previous is None else min(seed, previous)
    failed_at: dict[tuple[str, str], dict[float, int]] = {}
    failed_trials = 0
    for i in finished:
        if status[i] == "failed":
            failed_trials += 1
            by_lr = failed_at.setdefault((task_of[i], label(i)), {})
            by_lr[float(lr_of[i])] = by_lr.get(float(lr_of[i]), 0) + 1
    return _Gathered(
        resolved, task_order, sign, metric_name, m0, error_rates, pair_order, per_lr, diverged, optimizer_of,
        default_of, first_seed, failed_at, failed_trials,
    )  # fmt: skip


def analyze_sweep(
    trials: Any,
    *,
    chance: Mapping[str, float] | None = None,
    tau_max: float = TAU_MAX,
    protocol: str | None = None,
) -> SweepAnalysis:
    """Compute a sweep's robustness metrics (conventions in the module docstring).

    ``trials``: records or a DataFrame (columns in the module docstring). ``chance``: m0 per task in the
    task's orientation, overriding the median initial metric. ``protocol``: the sweep's protocol (read
    from the trials' phases when not given). No finished trials give an empty analysis.
    """
    chance = dict(chance or {})
    if isinstance(trials, pd.DataFrame):
        gathered = _gather_columns(trials, chance, protocol)
    else:
        gathered = _gather_records(_records(trials), chance, protocol)
    (
        resolved, task_order, sign, metric_name, m0, error_rates, pair_order, per_lr, diverged, optimizer_of,
        default_of, first_seed, failed_at, failed_trials,
    ) = gathered  # fmt: skip

    # First pass: eta_star, best (mean over the repeats at eta_star) and the values the grid metrics use.
    chosen: dict[tuple[str, str], _Choice] = {}
    for key in pair_order:
        chosen[key] = _choose(per_lr[key], resolved, first_seed.get(key))
    best_all: dict[str, float] = {}
    best_label: dict[str, str | None] = {}
    for task in task_order:
        candidates = [(chosen[key].best, key[1]) for key in pair_order if key[0] == task]
        value, label = min(candidates, key=lambda c: c[0])
        best_all[task], best_label[task] = value, label

    # The grid metrics use the learning rates common to all optimisers of the task.
    common: dict[str, tuple[float, ...]] = {}
    for task in task_order:
        grids = [sorted(chosen[key].values) for key in pair_order if key[0] == task]
        common[task] = tuple(lr for lr in grids[0] if all(any(same_lr(lr, x) for x in grid) for grid in grids[1:]))

    summaries = []
    for key in pair_order:
        task, label = key
        s, zero = sign[task], m0[task]
        choice = chosen[key]
        grid = sorted(per_lr[key])
        default = default_of[key]
        ootb_lr = next((lr for lr in grid if same_lr(lr, default)), None)
        ootb = float(np.mean([v for _, v in per_lr[key][ootb_lr]])) if ootb_lr is not None else math.nan
        metrics = _grid_metrics(choice.values, common[task], zero, resolved)
        failed_only = [lr for lr in failed_at.get(key, {}) if not any(same_lr(lr, x) for x in grid)]
        curve = tuple(
            LrPoint(lr=lr, mean=math.nan, std=math.nan, seeds=0, diverged=0, failed=failed_at[key][lr])
            if lr in failed_only
            else LrPoint(
                lr=lr,
                mean=s * float(np.mean([v for _, v in per_lr[key][lr]])),
                std=_sample_std([v for _, v in per_lr[key][lr]]),
                seeds=len(per_lr[key][lr]),
                diverged=diverged[key][lr],
                failed=failed_at.get(key, {}).get(lr, 0),
            )
            for lr in sorted([*grid, *failed_only])
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
                best=s * choice.best,
                eta_star=choice.eta_star,
                best_std=_sample_std(choice.best_values),
                best_seeds=len(choice.best_values),
                best_ci=_oriented_interval(choice.best_values, s),
                binomial_se=_binomial_se(task, s * choice.best, error_rates),
                ootb=s * ootb,
                ootb_regret=normalised_regret(float(np.fmin(ootb, zero)), zero, best_all[task]),
                lr_sensitivity=metrics.sensitivity,
                good_window=metrics.window,
                expected_best=tuple(s * value for value in metrics.expected_best),
                curve=curve,
                failed=sum(failed_at.get(key, {}).values()),
                good_window_lrs=metrics.window_lrs,
                grid_metrics_note=metrics.note,
                protocol=resolved,
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
            common_grid=common[task],
        )
        for task in task_order
    )
    labels = tuple(dict.fromkeys(label for _, label in pair_order))
    oriented_summary = {(s.task, s.label): s for s in summaries}
    kinds = {
        task: ratio_kind(lower_is_better=sign[task] > 0, best_all=sign[task] * best_all[task]) for task in task_order
    }
    profiles = {}
    for kind in ("ootb", "tuned"):
        ratios: dict[str, dict[str, float]] = {}
        for label in labels:
            ratios[label] = {}
            for task in task_order:
                summary = oriented_summary.get((task, label))
                value = math.nan if summary is None else (summary.ootb if kind == "ootb" else summary.best)
                ratios[label][task] = performance_ratio(sign[task] * value, m0[task], best_all[task], kinds[task])
        profiles[kind] = _profile(kind, tuple(task_order), labels, ratios, kinds, tau_max)  # type: ignore[arg-type]
    comparisons = tuple(
        _compare(task, best_label[task], key[1], chosen[(task, best_label[task])], chosen[key])
        for task in task_order
        for key in pair_order
        if key[0] == task and key[1] != best_label[task]
    )
    return SweepAnalysis(
        per_optimizer=tuple(summaries),
        tasks=tasks,
        profiles=profiles,
        failed_trials=failed_trials,
        comparisons=comparisons,
    )


def _oriented_interval(values: list[float], sign: float) -> tuple[float, float]:
    low, high = t_interval(values)
    return (low, high) if sign > 0 else (-high, -low)


def _binomial_se(task: str, best: float, error_rates: Mapping[str, tuple[bool, int | None]]) -> float:
    is_error_rate, size = error_rates.get(task, (False, None))
    if not is_error_rate or size is None or not math.isfinite(best):
        return math.nan
    return binomial_standard_error(best, int(size))


def _compare(task: str, best_label: str, label: str, best: _Choice, other: _Choice) -> SeedComparison:
    """``label`` against the best of the task, paired over the seeds both ran at their eta_star (oriented
    values, so a positive difference is worse than the best whatever the task's orientation)."""
    best_by_seed = {seed: value for seed, value in best.best_points if seed is not None}
    differences = [value - best_by_seed[seed] for seed, value in other.best_points if seed in best_by_seed]
    mean = float(np.mean(differences)) if differences else math.nan
    low, high = t_interval(differences)
    distinguishable = None if len(differences) < 2 else bool(low > 0 or high < 0)
    return SeedComparison(
        task=task,
        best_label=best_label,
        label=label,
        seeds=len(differences),
        difference=mean,
        ci_low=low,
        ci_high=high,
        distinguishable=distinguishable,
    )


def _profile(
    kind: ProfileKind,
    tasks: tuple[str, ...],
    labels: tuple[str, ...],
    ratios: dict[str, dict[str, float]],
    kinds: dict[str, str],
    tau_max: float,
) -> PerformanceProfile:
    steps = round((tau_max - 1.0) / _TAU_STEP)
    taus = tuple(float(t) for t in np.linspace(1.0, tau_max, steps + 1))
    rho = {
        label: tuple(sum(1 for r in ratios[label].values() if r <= tau) / len(tasks) for tau in taus)
        for label in labels
    }
    scores = {label: profile_score(ratios[label].values(), tau_max) for label in labels}
    return PerformanceProfile(
        kind=kind,
        tau_max=tau_max,
        tasks=tasks,
        labels=labels,
        ratios=ratios,
        ratio_kinds=kinds,
        taus=taus,
        rho=rho,
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
            ci_low=s.best_ci[0],
            ci_high=s.best_ci[1],
            binomial_se=s.binomial_se,
            is_best=analysis.is_best(s.task, s.label),
            comparison=comparison.text if (comparison := analysis.comparison(s.task, s.label)) else "",
        )
        for s in analysis.per_optimizer
    ]


__all__ = [
    "COST_RATIO",
    "FINISHED_STATUSES",
    "GAIN_RATIO",
    "LrPoint",
    "OptimizerSummary",
    "PaperTableRow",
    "PerformanceProfile",
    "SeedComparison",
    "SweepAnalysis",
    "TaskSummary",
    "analyze_sweep",
    "binomial_standard_error",
    "expected_best_of_k",
    "paper_table",
    "performance_ratio",
    "normalised_regret",
    "profile_score",
    "ratio_kind",
    "resolve_protocol",
    "t_interval",
]
