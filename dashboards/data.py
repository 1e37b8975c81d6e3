"""The numbers behind each figure and table, split from the drawing (as in Optuna's visualization module).

Every ``*_info`` function takes a sweep's trials (the frame of :func:`nero_study.store.repo.trials_frame`)
and/or its :class:`~nero_study.study.analysis.SweepAnalysis`, and returns a small NamedTuple that the
builders in :mod:`dashboards.figures` only draw. The tests check these numbers by hand.

Conventions:

- Only finished trials (succeeded, diverged, failed) count, as in the analysis.
- Metrics are in the task's own orientation (an error or a perplexity: lower is better; a return: higher).
- On the lr-sensitivity panels the line and band are the mean and sample standard deviation (ddof=1) over the
  seeds that ended with a finite metric; a diverged or failed trial is never averaged in (its metric is NaN or
  inf) and never dropped either: it becomes a marker at the *top of the finite data range* of its panel, so it
  is visible without stretching the axis. The best-lr and default-lr marks come from the analysis (where a
  diverged trial counts as the metric at chance).
- ``None`` stands for "no number" (JSON null, a gap in a Plotly line).
- Colours are fixed per optimiser label (:func:`optimizer_colors`), so every figure and page agrees.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from nero_study.formatting import format_number
from nero_study.store.repo import TRIAL_FRAME_COLUMNS
from nero_study.study.analysis import FINISHED_STATUSES, SweepAnalysis, analyze_sweep

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: Fixed colours of the optimisers of the study (the same on every figure and page).
KNOWN_OPTIMIZER_COLORS: dict[str, str] = {
    "nero": "#d62728",
    "sgd": "#1f77b4",
    "adam": "#2ca02c",
    "lamb": "#9467bd",
    "madam": "#8c564b",
}
#: Colours for other labels (variants such as ``nero-unconstrained``), picked by a stable hash of the label.
EXTRA_COLORS: tuple[str, ...] = (
    "#ff7f0e",
    "#17becf",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
)
#: Colours of trial statuses (progress bars and the progress figure).
STATUS_COLORS: dict[str, str] = {
    "succeeded": "#2ca02c",
    "diverged": "#ff7f0e",
    "failed": "#d62728",
    "cancelled": "#7f7f7f",
    "running": "#1f77b4",
    "pending": "#c7c7c7",
}
#: Order of statuses in progress bars and stacked figures: results first, then work in flight, then queued.
STATUS_ORDER: tuple[str, ...] = ("succeeded", "diverged", "failed", "cancelled", "running", "pending")
SWEEP_DONE_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
#: At most this many points per drawn curve (learning curves, progress over time).
MAX_CURVE_POINTS = 200
_LR_REL_TOL = 1e-9
#: A positive metric spanning at least this ratio (max/min) is drawn on a log y axis (e.g. perplexities).
LOG_METRIC_RATIO = 20.0
#: Horizontal spread between the diverged marks of different optimisers at one lr, in decades (~8%).
DODGE_DECADES = 0.035


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_LR_REL_TOL)


def wants_log_axis(values: Iterable[float | None]) -> bool:
    """Whether values are best drawn on a log axis: all positive, spanning at least ``LOG_METRIC_RATIO``."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= LOG_METRIC_RATIO


# --- colours and order ------------------------------------------------------------------------------


def optimizer_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour per optimiser label: the study's optimisers have fixed colours, other labels a hashed one.

    The result depends only on the set of labels, so every figure drawn for the same labels agrees; two
    other labels that hash to the same colour get the next free one.
    """
    unique = list(dict.fromkeys(labels))
    colors: dict[str, str] = {}
    used: set[str] = set()
    for label in unique:
        if label in KNOWN_OPTIMIZER_COLORS:
            colors[label] = KNOWN_OPTIMIZER_COLORS[label]
            used.add(colors[label])
    for label in sorted(label for label in unique if label not in colors):
        start = zlib.crc32(label.encode()) % len(EXTRA_COLORS)
        for offset in range(len(EXTRA_COLORS)):
            candidate = EXTRA_COLORS[(start + offset) % len(EXTRA_COLORS)]
            if candidate not in used:
                break
        else:  # more labels than colours: reuse the hashed one
            candidate = EXTRA_COLORS[start]
        colors[label] = candidate
        used.add(candidate)
    return {label: colors[label] for label in unique}


def spec_labels(spec: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The optimiser labels of a stored sweep spec, in spec order (a plain name is its own label)."""
    labels = []
    for variant in (spec or {}).get("optimizers", []) or []:
        if isinstance(variant, Mapping):
            label = variant.get("label") or variant.get("name")
        else:
            label = variant
        if isinstance(label, str) and label:
            labels.append(label)
    return tuple(dict.fromkeys(labels))


def label_order(analysis: SweepAnalysis, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """``labels`` (e.g. the spec's order) followed by any other label the analysis has, in its order."""
    seen = list(labels or ())
    for summary in analysis.per_optimizer:
        if summary.label not in seen:
            seen.append(summary.label)
    return tuple(seen)


def _label_column(trials: pd.DataFrame) -> pd.Series:
    """Each trial's optimiser label (its optimiser's name where the label is missing), as the analysis does."""
    optimizer = trials["optimizer"] if "optimizer" in trials else pd.Series("", index=trials.index)
    if "label" not in trials:
        return optimizer.fillna("").astype(str)
    label = trials["label"]
    empty = label.isna() | (label.astype(str) == "")
    return label.where(~empty, optimizer).fillna("").astype(str)


def finished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The finished trials (succeeded, diverged, failed) with a ``label`` column filled in."""
    if trials is None or len(trials) == 0 or "status" not in trials:
        return pd.DataFrame(columns=["task", "label", "lr", "seed", "status", "metric"])
    frame = trials[trials["status"].isin(FINISHED_STATUSES)].copy()
    frame["label"] = _label_column(frame)
    return frame


# --- learning-rate sensitivity ----------------------------------------------------------------------


class Marker(NamedTuple):
    """One mark on a panel: for learning rate ``lr``, drawn at ``x`` (= ``lr``, except that diverged marks of
    several optimisers at one lr are spread by a few percent so that none hides another) and metric
    ``value`` (y), with a hover ``text``."""

    lr: float
    value: float
    text: str
    x: float


class LrSeries(NamedTuple):
    """One optimiser label on one task: mean ± std over seeds per lr, and its marks."""

    label: str
    optimizer: str
    color: str
    lrs: tuple[float, ...]  # the grid, ascending
    means: tuple[float | None, ...]  # over seeds with a finite metric; None where every seed diverged/failed
    stds: tuple[float | None, ...]  # sample std (ddof=1); None with fewer than two finite seeds
    seeds: tuple[int, ...]  # finished trials per lr
    diverged: tuple[int, ...]  # diverged (or no finite metric) per lr
    failed: tuple[int, ...]  # failed per lr
    default_lr: float | None
    best_lr: float | None
    default_marker: Marker | None  # at the default lr (None when the default lr was not run)
    best_marker: Marker | None  # at eta* of the analysis
    diverged_markers: tuple[Marker, ...]  # one per lr with a diverged or failed trial, at the panel's top


class LrPanel(NamedTuple):
    """One task's panel."""

    task: str
    metric_name: str
    lower_is_better: bool
    initial_metric: float | None  # m0: metric at initialisation/chance
    top: float  # top of the finite data range (where diverged markers sit)
    log_metric: bool  # draw the metric on a log axis (positive values spanning >= LOG_METRIC_RATIO)
    series: tuple[LrSeries, ...]


class LrSensitivityInfo(NamedTuple):
    """One panel per task; ``note`` says why there is nothing to draw (empty when there is)."""

    panels: tuple[LrPanel, ...]
    labels: tuple[str, ...]
    note: str = ""


def _lr_text(label: str, lr: float, mean: float | None, std: float | None, seeds: int, bad: int) -> str:
    spread = f" ± {std:.2g}" if std is not None else ""
    extra = f", {bad} diverged/failed" if bad else ""
    return f"{label} lr={lr:g}: {format_number(mean)}{spread} ({seeds} seed{'s' if seeds != 1 else ''}{extra})"


def _summaries(analysis: SweepAnalysis) -> dict[tuple[str, str], Any]:
    return {(s.task, s.label): s for s in analysis.per_optimizer}


def lr_sensitivity_info(
    trials: pd.DataFrame,
    analysis: SweepAnalysis | None = None,
    *,
    labels: Sequence[str] | None = None,
    colors: Mapping[str, str] | None = None,
) -> LrSensitivityInfo:
    """Per task, per optimiser label: the metric over the lr grid (mean, std over seeds) and its marks.

    ``analysis`` is computed from ``trials`` when not given; ``labels`` orders the optimisers (spec order).
    """
    finished = finished_trials(trials)
    if analysis is None:
        analysis = analyze_sweep(trials)
    if not analysis.per_optimizer:
        return LrSensitivityInfo(panels=(), labels=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    summaries = _summaries(analysis)
    panels = []
    for task in analysis.tasks:
        task_rows = finished[finished["task"] == task.task]
        series_prep = []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                continue
            rows = task_rows[task_rows["label"] == label]
            lrs, means, stds, seeds, diverged, failed = [], [], [], [], [], []
            for point in summary.curve:
                at = rows[np.isclose(rows["lr"].astype(float), point.lr, rtol=_LR_REL_TOL, atol=0.0)]
                metric = pd.to_numeric(at["metric"], errors="coerce").astype(float)
                ok = (at["status"] == "succeeded") & np.isfinite(metric)
                values = metric[ok].to_numpy()
                lrs.append(float(point.lr))
                means.append(float(values.mean()) if len(values) else None)
                stds.append(float(values.std(ddof=1)) if len(values) > 1 else None)
                seeds.append(len(at))
                failed.append(int((at["status"] == "failed").sum()))
                diverged.append(int(len(at) - ok.sum() - failed[-1]))
            series_prep.append((summary, lrs, means, stds, seeds, diverged, failed))

        finite = [
            value
            for _, _, means, stds, *_ in series_prep
            for mean, std in zip(means, stds, strict=True)
            if mean is not None
            for value in (mean, mean + (std or 0.0))
        ]
        m0 = _number(task.initial_metric)
        top = max(finite) if finite else (m0 if m0 is not None else 1.0)
        lows = [
            mean - (std or 0.0)
            for _, _, means, stds, *_ in series_prep
            for mean, std in zip(means, stds, strict=True)
            if mean is not None
        ]
        log_metric = wants_log_axis([*finite, *lows])

        # Which series have a diverged/failed mark at each lr, in series order (to spread them apart).
        dodge: dict[float, list[str]] = {}
        for summary, lrs, _, _, _, diverged, failed in series_prep:
            for lr, d, f in zip(lrs, diverged, failed, strict=True):
                if d + f > 0:
                    dodge.setdefault(round(math.log10(lr), 9), []).append(summary.label)

        def spread(lr: float, label: str, dodge: dict[float, list[str]] = dodge) -> float:
            labels_here = dodge[round(math.log10(lr), 9)]
            offset = labels_here.index(label) - (len(labels_here) - 1) / 2
            return lr * 10 ** (DODGE_DECADES * offset)

        series = []
        for summary, lrs, means, stds, seeds, diverged, failed in series_prep:
            label = summary.label

            def value_at(lr: float, lrs: list[float] = lrs, means: list[float | None] = means) -> float | None:
                index = next((i for i, x in enumerate(lrs) if _close(x, lr)), None)
                return None if index is None else means[index]

            default_lr = _number(summary.default_lr)
            default_marker = None
            if default_lr is not None and any(_close(x, default_lr) for x in lrs):
                value = value_at(default_lr)
                default_marker = Marker(
                    lr=default_lr,
                    x=default_lr,
                    value=top if value is None else value,
                    text=f"{label} default lr {default_lr:g}: "
                    f"{format_number(value) if value is not None else 'diverged'}",
                )
            best_lr = _number(summary.eta_star)
            best_marker = None
            if best_lr is not None:
                value = value_at(best_lr)
                best_marker = Marker(
                    lr=best_lr,
                    x=best_lr,
                    value=top if value is None else value,
                    text=f"{label} best lr {best_lr:g}: {format_number(summary.best if value is not None else None)}",
                )
            bad = [
                Marker(
                    lr=lr,
                    x=spread(lr, label),
                    value=top,
                    text=f"{label} lr={lr:g}: {d} diverged, {f} failed of {n}",
                )
                for lr, d, f, n in zip(lrs, diverged, failed, seeds, strict=True)
                if d + f > 0
            ]
            series.append(
                LrSeries(
                    label=label,
                    optimizer=summary.optimizer,
                    color=colors.get(label, EXTRA_COLORS[0]),
                    lrs=tuple(lrs),
                    means=tuple(means),
                    stds=tuple(stds),
                    seeds=tuple(seeds),
                    diverged=tuple(diverged),
                    failed=tuple(failed),
                    default_lr=default_lr,
                    best_lr=best_lr,
                    default_marker=default_marker,
                    best_marker=best_marker,
                    diverged_markers=tuple(bad),
                )
            )
        panels.append(
            LrPanel(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                initial_metric=m0,
                top=float(top),
                log_metric=log_metric,
                series=tuple(series),
            )
        )
    used = tuple(label for label in order if any(s.label == label for p in panels for s in p.series))
    return LrSensitivityInfo(panels=tuple(panels), labels=used)


def lr_hover_texts(series: LrSeries) -> tuple[str, ...]:
    """Hover text per lr of a series: mean ± std, seeds, diverged/failed."""
    return tuple(
        _lr_text(series.label, lr, mean, std, n, d + f)
        for lr, mean, std, n, d, f in zip(
            series.lrs, series.means, series.stds, series.seeds, series.diverged, series.failed, strict=True
        )
    )


# --- out of the box vs tuned ------------------------------------------------------------------------


class OotbTunedBar(NamedTuple):
    """One optimiser on one task: the metric at its default lr and at its best lr (analysis means)."""

    label: str
    color: str
    ootb: float | None  # mean at the default lr (a diverged seed counts as m0); None if not run
    ootb_std: float | None
    default_lr: float | None
    ootb_diverged: int  # seeds at the default lr that diverged or failed
    tuned: float | None  # mean at eta*
    tuned_std: float | None
    best_lr: float | None


class OotbTunedPanel(NamedTuple):
    task: str
    metric_name: str
    lower_is_better: bool
    log_metric: bool
    bars: tuple[OotbTunedBar, ...]


class OotbTunedInfo(NamedTuple):
    panels: tuple[OotbTunedPanel, ...]
    note: str = ""


def ootb_vs_tuned_info(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> OotbTunedInfo:
    """Per task, per optimiser: out-of-the-box metric (default lr) next to the tuned one (best lr)."""
    if not analysis.per_optimizer:
        return OotbTunedInfo(panels=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    summaries = _summaries(analysis)
    panels = []
    for task in analysis.tasks:
        bars = []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                continue
            default_lr = _number(summary.default_lr)
            at_default = next((p for p in summary.curve if default_lr is not None and _close(p.lr, default_lr)), None)
            bars.append(
                OotbTunedBar(
                    label=label,
                    color=colors.get(label, EXTRA_COLORS[0]),
                    ootb=_number(summary.ootb),
                    ootb_std=None if at_default is None else _number(at_default.std),
                    default_lr=default_lr,
                    ootb_diverged=0 if at_default is None else int(at_default.diverged),
                    tuned=_number(summary.best),
                    tuned_std=_number(summary.best_std),
                    best_lr=_number(summary.eta_star),
                )
            )
        panels.append(
            OotbTunedPanel(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                log_metric=wants_log_axis(v for bar in bars for v in (bar.ootb, bar.tuned)),
                bars=tuple(bars),
            )
        )
    return OotbTunedInfo(panels=tuple(panels))


# --- normalised heatmap -----------------------------------------------------------------------------


class HeatmapInfo(NamedTuple):
    """Normalised score per task (rows) and optimiser (columns): 0 = chance (m0), 1 = best of all optimisers.

    ``(m0 - m) / (m0 - best_all)`` in the task's own units, so it reads the same for lower- and
    higher-is-better metrics; below 0 means worse than chance. ``None``: not run, or nothing beat chance.
    """

    tasks: tuple[str, ...]
    labels: tuple[str, ...]
    ootb: tuple[tuple[float | None, ...], ...]
    tuned: tuple[tuple[float | None, ...], ...]
    note: str = ""


def normalized_score(metric: float | None, m0: float | None, best_all: float | None) -> float | None:
    """``(m0 - metric) / (m0 - best_all)``: 0 at chance, 1 at the best; ``None`` when undefined."""
    metric, m0, best_all = _number(metric), _number(m0), _number(best_all)
    if metric is None or m0 is None or best_all is None or m0 == best_all:
        return None
    return (m0 - metric) / (m0 - best_all)


def normalized_score_info(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> HeatmapInfo:
    """The out-of-the-box and tuned normalised scores of every (task, optimiser)."""
    if not analysis.per_optimizer:
        return HeatmapInfo(tasks=(), labels=(), ootb=(), tuned=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    order = tuple(label for label in order if any(s.label == label for s in analysis.per_optimizer))
    summaries = _summaries(analysis)
    ootb_rows, tuned_rows = [], []
    for task in analysis.tasks:
        ootb_row, tuned_row = [], []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                ootb_row.append(None)
                tuned_row.append(None)
                continue
            ootb_row.append(normalized_score(summary.ootb, task.initial_metric, task.best_all))
            tuned_row.append(normalized_score(summary.best, task.initial_metric, task.best_all))
        ootb_rows.append(tuple(ootb_row))
        tuned_rows.append(tuple(tuned_row))
    return HeatmapInfo(
        tasks=tuple(t.task for t in analysis.tasks), labels=order, ootb=tuple(ootb_rows), tuned=tuple(tuned_rows)
    )


# --- performance profiles ---------------------------------------------------------------------------


class ProfileCurve(NamedTuple):
    """rho(tau) of one optimiser: the fraction of tasks it solves within a factor tau of the best."""

    label: str
    color: str
    taus: tuple[float, ...]
    rho: tuple[float, ...]
    score: float | None  # mean of rho over tau in [1, tau_max]


class ProfilesInfo(NamedTuple):
    ootb: tuple[ProfileCurve, ...]
    tuned: tuple[ProfileCurve, ...]
    tau_max: float
    tasks: int
    note: str = ""


def _step_points(taus: Sequence[float], rho: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Only the taus where rho changes (plus both ends): a step curve drawn with ``line_shape='hv'``."""
    keep = [i for i in range(len(taus)) if i in (0, len(taus) - 1) or rho[i] != rho[i - 1]]
    return tuple(float(taus[i]) for i in keep), tuple(float(rho[i]) for i in keep)


def performance_profile_info(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> ProfilesInfo:
    """The out-of-the-box and tuned performance profiles with their scores."""
    tuned = analysis.profiles.get("tuned")
    if not analysis.per_optimizer or tuned is None:
        return ProfilesInfo(ootb=(), tuned=(), tau_max=4.0, tasks=0, note="No finished trials yet")
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    curves: dict[str, tuple[ProfileCurve, ...]] = {}
    for kind in ("ootb", "tuned"):
        profile = analysis.profiles[kind]
        items = []
        for label in order:
            if label not in profile.rho:
                continue
            taus, rho = _step_points(profile.taus, profile.rho[label])
            items.append(
                ProfileCurve(
                    label=label,
                    color=colors.get(label, EXTRA_COLORS[0]),
                    taus=taus,
                    rho=rho,
                    score=_number(profile.scores.get(label)),
                )
            )
        curves[kind] = tuple(items)
    return ProfilesInfo(ootb=curves["ootb"], tuned=curves["tuned"], tau_max=tuned.tau_max, tasks=len(tuned.tasks))


# --- expected best after k trials -------------------------------------------------------------------


class ExpectedBestSeries(NamedTuple):
    label: str
    color: str
    ks: tuple[int, ...]  # 1..|G|
    values: tuple[float | None, ...]


class ExpectedBestPanel(NamedTuple):
    task: str
    metric_name: str
    lower_is_better: bool
    log_metric: bool
    series: tuple[ExpectedBestSeries, ...]


class ExpectedBestInfo(NamedTuple):
    panels: tuple[ExpectedBestPanel, ...]
    note: str = ""


def expected_best_info(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> ExpectedBestInfo:
    """Per task, per optimiser: the expected best metric after k lrs drawn at random from its grid."""
    if not analysis.per_optimizer:
        return ExpectedBestInfo(panels=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    summaries = _summaries(analysis)
    panels = []
    for task in analysis.tasks:
        series = []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                continue
            values = tuple(_number(v) for v in summary.expected_best)
            series.append(
                ExpectedBestSeries(
                    label=label,
                    color=colors.get(label, EXTRA_COLORS[0]),
                    ks=tuple(range(1, len(values) + 1)),
                    values=values,
                )
            )
        panels.append(
            ExpectedBestPanel(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                log_metric=wants_log_axis(v for item in series for v in item.values),
                series=tuple(series),
            )
        )
    return ExpectedBestInfo(panels=tuple(panels))


# --- learning curves --------------------------------------------------------------------------------


def downsample_indices(values: Sequence[float | None], max_points: int = MAX_CURVE_POINTS) -> tuple[int, ...]:
    """Indices of at most ``max_points`` points of a curve that keep its shape: min-max buckets.

    The first and last points are always kept, and in each bucket the smallest and largest finite values
    (so the global extremes survive), plus the first non-finite value (NaN/inf: where a run diverged).
    ``None`` (never reported) counts as missing. A curve with ``max_points`` points or fewer is kept whole.
    """
    n = len(values)
    if n <= max_points:
        return tuple(range(n))
    if max_points < 3:
        raise ValueError(f"Invalid max_points: {max_points}; need at least 3")
    array = np.array([math.nan if v is None else float(v) for v in values], dtype=float)
    present = np.array([v is not None for v in values])
    finite = np.isfinite(array)
    nonfinite = present & ~finite
    per_bucket = 3 if nonfinite[1:-1].any() else 2
    buckets = max(1, (max_points - 2) // per_bucket)
    edges = np.linspace(1, n - 1, buckets + 1).round().astype(int)
    keep = {0, n - 1}
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        if high <= low:
            continue
        window = np.arange(low, high)
        good = window[finite[low:high]]
        if len(good):
            keep.add(int(good[np.argmin(array[good])]))
            keep.add(int(good[np.argmax(array[good])]))
        bad = window[nonfinite[low:high]]
        if len(bad) and per_bucket == 3:
            keep.add(int(bad[0]))
    return tuple(sorted(keep))


class CurveSeries(NamedTuple):
    """One trial's values of one measure: at most MAX_CURVE_POINTS points; non-finite ones as ``None``.

    A NaN before the first finite value means "not measured yet" (no training loss at step 0) and is dropped.
    ``diverged_steps`` marks where the run went wrong: each NaN/inf after training started, or, for a trial
    that diverged or failed with a finite last value (it was stopped before reporting a NaN), its last step.
    """

    name: str  # legend name, e.g. "nero lr=0.01 seed 0"
    label: str  # optimiser label (legend group and colour)
    color: str
    trial_id: int | None
    steps: tuple[int, ...]
    values: tuple[float | None, ...]  # None: NaN/inf at that step (a gap)
    diverged_steps: tuple[int, ...]  # drawn as an x at the top of the panel


class CurvePanel(NamedTuple):
    title: str
    y_title: str
    top: float | None  # top of the finite values (non-finite markers sit there)
    log_y: bool  # positive values spanning >= LOG_METRIC_RATIO: drawn on a log axis
    series: tuple[CurveSeries, ...]


class CurveRow(NamedTuple):
    """One row of the learning-curves figure: the metric and the training loss of some trials."""

    title: str
    metric: CurvePanel
    train_loss: CurvePanel


class LearningCurvesInfo(NamedTuple):
    rows: tuple[CurveRow, ...]
    note: str = ""


def _curve_series(
    name: str,
    label: str,
    color: str,
    trial_id: int | None,
    curve: Sequence[Mapping[str, Any]],
    measure: str,
    max_points: int,
    stopped: bool,
) -> CurveSeries:
    points = [p for p in curve if p.get(measure) is not None and p.get("step") is not None]
    points.sort(key=lambda p: p["step"])
    values = [float(p[measure]) for p in points]
    first = next((i for i, value in enumerate(values) if math.isfinite(value)), len(values))
    points, values = points[first:], values[first:]  # leading NaNs: not measured yet
    keep = downsample_indices(values, max_points)
    steps = tuple(int(points[i]["step"]) for i in keep)
    kept = tuple(values[i] if math.isfinite(values[i]) else None for i in keep)
    marks = [step for step, value in zip(steps, kept, strict=True) if value is None]
    if stopped and steps and not marks:
        marks.append(steps[-1])
    return CurveSeries(
        name=name, label=label, color=color, trial_id=trial_id, steps=steps, values=kept, diverged_steps=tuple(marks)
    )


def _panel(title: str, y_title: str, series: list[CurveSeries]) -> CurvePanel:
    finite = [v for s in series for v in s.values if v is not None]
    return CurvePanel(
        title=title,
        y_title=y_title,
        top=max(finite) if finite else None,
        log_y=wants_log_axis(finite),
        series=tuple(series),
    )


def learning_curves_info(
    selected: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
    *,
    colors: Mapping[str, str] | None = None,
    max_points: int = MAX_CURVE_POINTS,
) -> LearningCurvesInfo:
    """Metric and training loss against step for ``selected`` = [(trial record, curve points), ...].

    A trial record has ``task``, ``label`` (or ``optimizer``), ``lr``, ``seed`` and optionally ``id``,
    ``status`` and ``metric_name``; curve points are dicts with ``step``, ``metric``, ``train_loss`` (as from
    :func:`nero_study.store.repo.trial_curve`). One row per task, in order of appearance; each curve is
    downsampled to at most ``max_points`` points.
    """
    if not selected:
        return LearningCurvesInfo(rows=(), note="No learning curves to show")
    labels = [str(trial.get("label") or trial.get("optimizer") or "") for trial, _ in selected]
    colors = dict(colors or optimizer_colors(labels))
    by_task: dict[str, list[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], str]]] = {}
    for (trial, curve), label in zip(selected, labels, strict=True):
        by_task.setdefault(str(trial.get("task", "")), []).append((trial, curve, label))
    rows = []
    for task, items in by_task.items():
        metric_name = next((str(t.get("metric_name")) for t, _, _ in items if t.get("metric_name")), "metric")
        metric_series, loss_series = [], []
        for trial, curve, label in items:
            lr = _number(trial.get("lr"))
            name = f"{label} lr={lr:g}" if lr is not None else label
            if trial.get("seed") is not None:
                name += f" seed {trial['seed']}"
            trial_id = None if _missing(trial.get("id")) else int(trial["id"])
            color = colors.get(label, EXTRA_COLORS[0])
            stopped = trial.get("status") in ("diverged", "failed")
            metric_series.append(_curve_series(name, label, color, trial_id, curve, "metric", max_points, stopped))
            loss_series.append(_curve_series(name, label, color, trial_id, curve, "train_loss", max_points, stopped))
        rows.append(
            CurveRow(
                title=task,
                metric=_panel(f"{task}: {metric_name}", metric_name, metric_series),
                train_loss=_panel(f"{task}: training loss", "training loss", loss_series),
            )
        )
    if not any(s.steps for row in rows for s in row.metric.series + row.train_loss.series):
        return LearningCurvesInfo(rows=(), note="No learning-curve points recorded yet")
    return LearningCurvesInfo(rows=tuple(rows))


def select_curve_trials(trials: pd.DataFrame, analysis: SweepAnalysis) -> list[dict[str, Any]]:
    """For each (task, optimiser), one finished trial at its best lr (a succeeded one, lowest seed first)."""
    finished = finished_trials(trials)
    chosen = []
    for summary in analysis.per_optimizer:
        rows = finished[
            (finished["task"] == summary.task)
            & (finished["label"] == summary.label)
            & np.isclose(finished["lr"].astype(float), summary.eta_star, rtol=_LR_REL_TOL, atol=0.0)
        ]
        if not len(rows):
            continue
        rows = rows.assign(_failed=(rows["status"] != "succeeded").astype(int)).sort_values(["_failed", "seed"])
        chosen.append({k: v for k, v in rows.iloc[0].to_dict().items() if k != "_failed"})
    return chosen


# --- sweep progress ---------------------------------------------------------------------------------


class ProgressInfo(NamedTuple):
    """Number of trials in each status over time (from their created/started/finished timestamps)."""

    times: tuple[datetime, ...]
    counts: dict[str, tuple[int, ...]]  # status -> count at each time, for every status of STATUS_ORDER
    total: int
    note: str = ""


def _seconds(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A timestamp column as float seconds since the epoch (UTC); a missing time is NaN."""
    if column not in frame or len(frame) == 0:
        return np.full(len(frame), math.nan)
    values = pd.to_datetime(frame[column], utc=True, errors="coerce")
    return (values - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=float)


def sweep_progress_info(trials: pd.DataFrame, *, max_points: int = MAX_CURVE_POINTS) -> ProgressInfo:
    """Trials by status over time, at most ``max_points`` times (every event when there are fewer).

    At time t a trial is: its final status once finished (``finished_at <= t``), ``running`` once started,
    else ``pending`` once created. Times come from the trials' stored timestamps (UTC).
    """
    empty: dict[str, tuple[int, ...]] = {status: () for status in STATUS_ORDER}
    if trials is None or len(trials) == 0:
        return ProgressInfo(times=(), counts=empty, total=0, note="No trials yet")
    created, started, finished = (_seconds(trials, c) for c in ("created_at", "started_at", "finished_at"))
    status = trials["status"].astype(str).to_numpy()
    events = np.unique(np.concatenate([created, started, finished]))
    events = events[np.isfinite(events)]
    if len(events) == 0:
        return ProgressInfo(times=(), counts=empty, total=len(trials), note="No timestamps recorded yet")
    if len(events) > max_points:
        picks = np.unique(np.linspace(0, len(events) - 1, max_points).round().astype(int))
        events = events[picks]
    final = np.where(np.isin(status, ("pending", "running")), "cancelled", status)  # a re-queued trial's end
    counts: dict[str, list[int]] = {s: [] for s in STATUS_ORDER}
    for t in events:
        done = finished <= t  # NaN compares False: never finished
        running = ~done & (started <= t)
        pending = ~done & ~running & (created <= t)
        for name in ("succeeded", "diverged", "failed", "cancelled"):
            counts[name].append(int((done & (final == name)).sum()))
        counts["running"].append(int(running.sum()))
        counts["pending"].append(int(pending.sum()))
    times = tuple(pd.to_datetime(events, unit="s", utc=True).to_pydatetime())
    return ProgressInfo(times=times, counts={k: tuple(v) for k, v in counts.items()}, total=len(trials))


class ProgressSegment(NamedTuple):
    status: str
    count: int
    percent: float  # of the bar's total, 0..100
    color: str


class ProgressBar(NamedTuple):
    """A sweep's progress: trials with a result out of the planned (or stored) total, by status."""

    total: int
    done: int  # succeeded + diverged + failed
    percent_done: float  # 0..100
    segments: tuple[ProgressSegment, ...]


def progress_bar(counts: Mapping[str, int], planned: int | None = None) -> ProgressBar:
    """The progress bar of a sweep: one segment per non-empty status, over max(planned, stored trials)."""
    stored = sum(int(v) for v in counts.values())
    total = max(int(planned or 0), stored)
    done = sum(int(counts.get(s, 0)) for s in FINISHED_STATUSES)
    segments = tuple(
        ProgressSegment(
            status=status,
            count=int(counts.get(status, 0)),
            percent=100.0 * int(counts.get(status, 0)) / total if total else 0.0,
            color=STATUS_COLORS[status],
        )
        for status in STATUS_ORDER
        if status != "pending" and counts.get(status, 0)
    )
    return ProgressBar(total=total, done=done, percent_done=100.0 * done / total if total else 0.0, segments=segments)


# --- tables -----------------------------------------------------------------------------------------


class PaperRow(NamedTuple):
    """One optimiser in the paper-style table of a task (the task's orientation and units)."""

    label: str
    color: str
    best: float | None  # mean over seeds at the best lr
    best_std: float | None  # sample std at the best lr (None with one seed)
    seeds: int
    best_lr: float | None
    ootb: float | None  # mean at the default lr
    default_lr: float | None
    is_best: bool  # the best tuned metric of the task
    is_best_ootb: bool  # the best out-of-the-box metric of the task


class PaperTable(NamedTuple):
    task: str
    metric_name: str
    lower_is_better: bool
    initial_metric: float | None
    rows: tuple[PaperRow, ...]


def paper_tables(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> tuple[PaperTable, ...]:
    """The paper's comparison per task: each optimiser's metric mean ± std at its best lr, its best lr and its
    out-of-the-box metric; the best of the task is flagged (tuned and out of the box separately)."""
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    summaries = _summaries(analysis)
    tables = []
    for task in analysis.tasks:
        items = [summaries[(task.task, label)] for label in order if (task.task, label) in summaries]
        sign = 1.0 if task.lower_is_better else -1.0

        def best_of(values: list[float | None], sign: float = sign) -> float | None:
            oriented = [sign * v for v in values if v is not None]
            return sign * min(oriented) if oriented else None

        best_tuned = best_of([_number(s.best) for s in items])
        best_ootb = best_of([_number(s.ootb) for s in items])
        rows = tuple(
            PaperRow(
                label=s.label,
                color=colors.get(s.label, EXTRA_COLORS[0]),
                best=_number(s.best),
                best_std=_number(s.best_std),
                seeds=int(s.best_seeds),
                best_lr=_number(s.eta_star),
                ootb=_number(s.ootb),
                default_lr=_number(s.default_lr),
                is_best=best_tuned is not None and _number(s.best) == best_tuned,
                is_best_ootb=best_ootb is not None and _number(s.ootb) == best_ootb,
            )
            for s in items
        )
        tables.append(
            PaperTable(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                initial_metric=_number(task.initial_metric),
                rows=rows,
            )
        )
    return tuple(tables)


class RobustnessRow(NamedTuple):
    """The robustness metrics of one (task, optimiser) (DESIGN.md section 4)."""

    task: str
    label: str
    color: str
    ootb_regret: float | None  # fraction: (ootb - best_all) / |best_all|; inf possible
    lr_sensitivity: float | None  # metric units
    good_window: float | None  # decades
    ootb_ratio: float | None  # performance ratio at the default lr (inf: never beat chance)
    tuned_ratio: float | None


class ProfileScoreRow(NamedTuple):
    label: str
    color: str
    ootb_score: float | None
    tuned_score: float | None


def _ratio(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number  # inf is meaningful: kept


def robustness_rows(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> tuple[RobustnessRow, ...]:
    """One row per (task, optimiser): out-of-the-box regret, lr sensitivity, good window, profile ratios."""
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    rank = {label: i for i, label in enumerate(order)}
    task_rank = {t.task: i for i, t in enumerate(analysis.tasks)}
    items = sorted(analysis.per_optimizer, key=lambda s: (task_rank.get(s.task, 0), rank.get(s.label, 0)))
    ratios = {kind: profile.ratios for kind, profile in analysis.profiles.items()}
    return tuple(
        RobustnessRow(
            task=s.task,
            label=s.label,
            color=colors.get(s.label, EXTRA_COLORS[0]),
            ootb_regret=_ratio(s.ootb_regret),
            lr_sensitivity=_number(s.lr_sensitivity),
            good_window=_number(s.good_window),
            ootb_ratio=_ratio(ratios.get("ootb", {}).get(s.label, {}).get(s.task)),
            tuned_ratio=_ratio(ratios.get("tuned", {}).get(s.label, {}).get(s.task)),
        )
        for s in items
    )


def profile_score_rows(
    analysis: SweepAnalysis, *, labels: Sequence[str] | None = None, colors: Mapping[str, str] | None = None
) -> tuple[ProfileScoreRow, ...]:
    """Each optimiser's performance-profile score, out of the box and tuned (1 = best on every task)."""
    if not analysis.per_optimizer:
        return ()
    order = label_order(analysis, labels)
    colors = dict(colors or optimizer_colors(order))
    ootb, tuned = analysis.profiles.get("ootb"), analysis.profiles.get("tuned")
    return tuple(
        ProfileScoreRow(
            label=label,
            color=colors.get(label, EXTRA_COLORS[0]),
            ootb_score=None if ootb is None else _number(ootb.scores.get(label)),
            tuned_score=None if tuned is None else _number(tuned.scores.get(label)),
        )
        for label in order
        if tuned is not None and label in tuned.scores
    )


# --- sweep list and trial records ------------------------------------------------------------------


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


#: The fields of a trial shown on its page: the columns of the store's trials frame but the settings' hash.
TRIAL_FIELDS: tuple[str, ...] = tuple(name for name in TRIAL_FRAME_COLUMNS if name != "params_key")


def trial_record(trial: Any) -> dict[str, Any]:
    """A stored trial (a mapping or an object with the ``Trial`` attributes) as a plain dict of TRIAL_FIELDS."""
    if isinstance(trial, Mapping):
        return {name: trial.get(name) for name in TRIAL_FIELDS}
    return {name: getattr(trial, name, None) for name in TRIAL_FIELDS}


TRIAL_DONE: tuple[str, ...] = (*FINISHED_STATUSES, "cancelled")


def trial_version(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> str:
    """Changes whenever a trial's status or its number of curve points does (what the trial page compares)."""
    return f"{trial.get('status')}:{len(curve)}"


# --- loading a sweep through the store --------------------------------------------------------------


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

    @property
    def labels(self) -> tuple[str, ...]:
        """Optimiser labels in spec order, then any others found in the trials."""
        return label_order(self.analysis, spec_labels(self.spec))

    @property
    def finished(self) -> bool:
        """Whether the sweep has ended (nothing more will change)."""
        return self.status in SWEEP_DONE_STATUSES

    @property
    def version(self) -> str:
        """Changes whenever a trial changes status or the sweep does (what the live pages compare)."""
        return sweep_version(self.status, self.counts)

    @property
    def progress(self) -> ProgressBar:
        return progress_bar(self.counts, self.planned_trials)


def sweep_version(status: str, counts: Mapping[str, int]) -> str:
    """A short token of a sweep's state: its status and its trial counts by status."""
    return status + ":" + ",".join(f"{k}={int(counts[k])}" for k in sorted(counts))


def safe_analysis(trials: pd.DataFrame) -> tuple[SweepAnalysis, str | None]:
    """The analysis of ``trials``, or an empty one and the reason when the trials cannot be analysed."""
    try:
        return analyze_sweep(trials), None
    except ValueError as exc:
        return analyze_sweep([]), str(exc)


def load_sweep_snapshot(session: Session, *, sweep_id: str, with_curves: bool = True) -> SweepSnapshot | None:
    """Read a sweep, its trial counts and trials, analyse them and (``with_curves``) load the learning curves
    of each optimiser's best-lr trial, all through :mod:`nero_study.store.repo`. ``None`` for an unknown id."""
    from nero_study.store import repo
    from nero_study.study.plan import stored_planned_trials  # lazily: it validates specs (torch)

    sweep = repo.get_sweep(session, sweep_id=sweep_id)
    if sweep is None:
        return None
    counts = repo.sweep_counts(session, sweep_id=sweep.id)
    trials = repo.trials_frame(session, sweep_id=sweep.id)
    analysis, error = safe_analysis(trials)
    curves: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if with_curves:
        for trial in select_curve_trials(trials, analysis):
            curves.append((trial, repo.trial_curve(session, trial_id=int(trial["id"]))))
    spec = dict(sweep.spec or {})
    return SweepSnapshot(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        spec=spec,
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
    )


__all__ = [
    "KNOWN_OPTIMIZER_COLORS",
    "MAX_CURVE_POINTS",
    "STATUS_COLORS",
    "STATUS_ORDER",
    "CurvePanel",
    "CurveRow",
    "CurveSeries",
    "ExpectedBestInfo",
    "ExpectedBestPanel",
    "ExpectedBestSeries",
    "HeatmapInfo",
    "LearningCurvesInfo",
    "LrPanel",
    "LrSensitivityInfo",
    "LrSeries",
    "Marker",
    "OotbTunedBar",
    "OotbTunedInfo",
    "OotbTunedPanel",
    "PaperRow",
    "PaperTable",
    "ProfileCurve",
    "ProfileScoreRow",
    "ProfilesInfo",
    "ProgressBar",
    "ProgressInfo",
    "ProgressSegment",
    "RobustnessRow",
    "SweepListItem",
    "SweepSnapshot",
    "TRIAL_FIELDS",
    "downsample_indices",
    "expected_best_info",
    "finished_trials",
    "label_order",
    "learning_curves_info",
    "load_sweep_snapshot",
    "lr_hover_texts",
    "lr_sensitivity_info",
    "normalized_score",
    "normalized_score_info",
    "ootb_vs_tuned_info",
    "optimizer_colors",
    "paper_tables",
    "performance_profile_info",
    "profile_score_rows",
    "progress_bar",
    "robustness_rows",
    "safe_analysis",
    "select_curve_trials",
    "spec_labels",
    "sweep_progress_info",
    "sweep_list_item",
    "sweep_version",
    "trial_record",
    "trial_version",
    "wants_log_axis",
]
