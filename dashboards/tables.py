"""The tables of the sweep and compare pages, read from the analysis: the paper-style comparison per task, the
robustness metrics per (task, optimiser) and the performance-profile scores. Rows hold numbers; the templates
add the colours (:func:`~dashboards.common.optimizer_colors`) and the formatting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from dashboards.common import label_order, summaries_by_task_and_label
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis


class PaperRow(NamedTuple):
    """One optimiser in the paper-style table of a task (the task's orientation and units)."""

    label: str
    best: float | None  # mean over seeds at the best lr
    best_std: float | None  # sample std at the best lr (None with one seed)
    seeds: int
    best_lr: float | None
    ootb: float | None  # mean at the default lr
    default_lr: float | None
    is_best: bool  # the best tuned metric of the task, or not distinguishable from it across seeds
    is_best_ootb: bool  # the best out-of-the-box metric of the task
    ci_low: float | None = None  # 95% t-interval over the seeds at the best lr (None with one seed)
    ci_high: float | None = None
    interval_note: str = ""  # "1 seed: no interval" when there is none
    binomial_se: float | None = None  # error-rate metrics on a known test-set size
    comparison: str = ""  # paired over seeds against the task's best ("" for the best itself)


class PaperTable(NamedTuple):
    task: str
    metric_name: str
    lower_is_better: bool
    initial_metric: float | None
    rows: tuple[PaperRow, ...]


def _best_of(values: Sequence[float | None], lower_is_better: bool) -> float | None:
    """The best of ``values`` in the task's orientation (``None`` when there is none)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return min(present) if lower_is_better else max(present)


def paper_tables(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> tuple[PaperTable, ...]:
    """The paper's comparison per task: each optimiser's metric mean ± std at its best lr, its best lr and its
    out-of-the-box metric; the best of the task is flagged (tuned and out of the box separately)."""
    order = label_order(analysis, labels)
    summaries = summaries_by_task_and_label(analysis)
    tables = []
    for task in analysis.tasks:
        items = [summaries[(task.task, label)] for label in order if (task.task, label) in summaries]
        best_tuned = _best_of([finite_or_none(s.best) for s in items], task.lower_is_better)
        best_ootb = _best_of([finite_or_none(s.ootb) for s in items], task.lower_is_better)
        rows = tuple(
            PaperRow(
                label=s.label,
                best=finite_or_none(s.best),
                best_std=finite_or_none(s.best_std),
                seeds=int(s.best_seeds),
                best_lr=finite_or_none(s.eta_star),
                ootb=finite_or_none(s.ootb),
                default_lr=finite_or_none(s.default_lr),
                is_best=best_tuned is not None and analysis.is_best(task.task, s.label),
                is_best_ootb=best_ootb is not None and finite_or_none(s.ootb) == best_ootb,
                ci_low=finite_or_none(s.best_ci[0]),
                ci_high=finite_or_none(s.best_ci[1]),
                interval_note=f"{s.best_seeds} seed: no interval" if s.best_seeds == 1 else "",
                binomial_se=finite_or_none(s.binomial_se),
                comparison=comparison.text if (comparison := analysis.comparison(task.task, s.label)) else "",
            )
            for s in items
        )
        tables.append(
            PaperTable(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                initial_metric=finite_or_none(task.initial_metric),
                rows=rows,
            )
        )
    return tuple(tables)


class RobustnessRow(NamedTuple):
    """The robustness metrics of one (task, optimiser), as :mod:`nero_study.study.analysis` defines them."""

    task: str
    label: str
    ootb_regret: float | None  # normalised: (ootb - best_all) / (m0 - best_all); 0 = best, 1 = chance
    lr_sensitivity: float | None  # metric units
    good_window: float | None  # decades
    ootb_ratio: float | None  # performance ratio at the default lr (inf: never beat chance)
    tuned_ratio: float | None
    ratio_kind: str  # "cost ratio" (m / best) or "gain ratio" (gain over chance of the best / of this one)
    good_window_low: float | None  # the lowest and highest lr of the good window
    good_window_high: float | None
    grid_metrics_note: str | None  # why the grid metrics are null, or the grid they were computed on
    failed: int  # failed trials left out of every metric


class ProfileScoreRow(NamedTuple):
    label: str
    ootb_score: float | None
    tuned_score: float | None


def _ratio(value: Any) -> float | None:
    """A ratio or regret: ``None`` when missing or NaN; infinity is kept (it means "never beat chance")."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def robustness_rows(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> tuple[RobustnessRow, ...]:
    """One row per (task, optimiser): out-of-the-box regret, lr sensitivity, good window, profile ratios."""
    rank = {label: i for i, label in enumerate(label_order(analysis, labels))}
    task_rank = {t.task: i for i, t in enumerate(analysis.tasks)}
    items = sorted(analysis.per_optimizer, key=lambda s: (task_rank.get(s.task, 0), rank.get(s.label, 0)))
    ratios = {kind: profile.ratios for kind, profile in analysis.profiles.items()}
    tuned = analysis.profiles.get("tuned")
    kinds = tuned.ratio_kinds if tuned is not None else {}
    return tuple(
        RobustnessRow(
            task=s.task,
            label=s.label,
            ootb_regret=_ratio(s.ootb_regret),
            lr_sensitivity=finite_or_none(s.lr_sensitivity),
            good_window=finite_or_none(s.good_window),
            ootb_ratio=_ratio(ratios.get("ootb", {}).get(s.label, {}).get(s.task)),
            tuned_ratio=_ratio(ratios.get("tuned", {}).get(s.label, {}).get(s.task)),
            ratio_kind=kinds.get(s.task, ""),
            good_window_low=finite_or_none(s.good_window_lrs[0]),
            good_window_high=finite_or_none(s.good_window_lrs[1]),
            grid_metrics_note=s.grid_metrics_note,
            failed=int(s.failed),
        )
        for s in items
    )


def profile_score_rows(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> tuple[ProfileScoreRow, ...]:
    """Each optimiser's performance-profile score, out of the box and tuned (1 = best on every task)."""
    ootb, tuned = analysis.profiles.get("ootb"), analysis.profiles.get("tuned")
    if not analysis.per_optimizer or tuned is None:
        return ()
    return tuple(
        ProfileScoreRow(
            label=label,
            ootb_score=None if ootb is None else finite_or_none(ootb.scores.get(label)),
            tuned_score=finite_or_none(tuned.scores.get(label)),
        )
        for label in label_order(analysis, labels)
        if label in tuned.scores
    )


__all__ = [
    "PaperRow",
    "PaperTable",
    "ProfileScoreRow",
    "RobustnessRow",
    "paper_tables",
    "profile_score_rows",
    "robustness_rows",
]
