"""Learning curves: the metric and the training loss against step, one line per trial, one row per task.

:func:`learning_curves_info` downsamples each curve (:func:`downsample_indices`) and finds where a run went
wrong; :func:`plot_learning_curves` draws the lines and an x at the top of the panel for each such step.
:func:`select_curve_trials` picks the trials whose curves the sweep page shows (each optimiser's best lr).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import drawing
from dashboards.common import MAX_CURVE_POINTS, color_of, finished_trials, optimizer_colors, wants_log_axis
from nero_study.formatting import format_number
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis
from nero_study.vocabulary import LR_REL_TOL, TRIAL_FINISHED

#: A trial that ended so stopped early: its last step is marked even when its values are finite.
STOPPED_STATUSES: tuple[str, ...] = tuple(status for status in TRIAL_FINISHED if status != "succeeded")


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
    """One trial's values of one measure: at most ``max_points`` points; non-finite ones as ``None``.

    A NaN before the first finite value means "not measured yet" (no training loss at step 0) and is dropped.
    ``diverged_steps`` marks where the run went wrong: each NaN/inf after training started, or, for a trial
    that diverged or failed with a finite last value (it was stopped before reporting a NaN), its last step.
    """

    label: str  # optimiser label (legend group and colour)
    lr: float | None
    seed: int | None
    trial_id: int | None
    steps: tuple[int, ...]
    values: tuple[float | None, ...]  # None: NaN/inf at that step (a gap)
    diverged_steps: tuple[int, ...]  # drawn as an x at the top of the panel


class CurvePanel(NamedTuple):
    top: float | None  # top of the finite values (non-finite markers sit there)
    log_y: bool  # positive values spanning >= LOG_METRIC_RATIO: drawn on a log axis
    series: tuple[CurveSeries, ...]


class CurveRow(NamedTuple):
    """One row of the learning-curves figure: the metric and the training loss of one task's trials."""

    task: str
    metric_name: str
    metric: CurvePanel
    train_loss: CurvePanel


class LearningCurvesInfo(NamedTuple):
    rows: tuple[CurveRow, ...]
    note: str = ""


def _curve_series(
    trial: Mapping[str, Any], label: str, curve: Sequence[Mapping[str, Any]], measure: str, max_points: int
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
    if trial.get("status") in STOPPED_STATUSES and steps and not marks:
        marks.append(steps[-1])
    seed, trial_id = (trial.get(key) for key in ("seed", "id"))
    return CurveSeries(
        label=label,
        lr=finite_or_none(trial.get("lr")),
        seed=None if seed is None or seed != seed else int(seed),  # seed != seed: NaN
        trial_id=None if trial_id is None or trial_id != trial_id else int(trial_id),
        steps=steps,
        values=kept,
        diverged_steps=tuple(marks),
    )


def _panel(series: list[CurveSeries]) -> CurvePanel:
    finite = [v for s in series for v in s.values if v is not None]
    return CurvePanel(top=max(finite) if finite else None, log_y=wants_log_axis(finite), series=tuple(series))


def learning_curves_info(
    selected: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]], *, max_points: int = MAX_CURVE_POINTS
) -> LearningCurvesInfo:
    """Metric and training loss against step for ``selected`` = [(trial record, curve points), ...].

    A trial record has ``task``, ``label`` (or ``optimizer``), ``lr``, ``seed`` and optionally ``id``,
    ``status`` and ``metric_name``; curve points are dicts with ``step``, ``metric``, ``train_loss`` (as from
    :func:`nero_study.store.repo.trial_curve`). One row per task, in order of appearance; each curve is
    downsampled to at most ``max_points`` points.
    """
    if not selected:
        return LearningCurvesInfo(rows=(), note="No learning curves to show")
    by_task: dict[str, list[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], str]]] = {}
    for trial, curve in selected:
        label = str(trial.get("label") or trial.get("optimizer") or "")
        by_task.setdefault(str(trial.get("task", "")), []).append((trial, curve, label))
    rows = []
    for task, items in by_task.items():
        metric_name = next((str(t.get("metric_name")) for t, _, _ in items if t.get("metric_name")), "metric")
        metric = [_curve_series(trial, label, curve, "metric", max_points) for trial, curve, label in items]
        loss = [_curve_series(trial, label, curve, "train_loss", max_points) for trial, curve, label in items]
        rows.append(CurveRow(task=task, metric_name=metric_name, metric=_panel(metric), train_loss=_panel(loss)))
    if not any(s.steps for row in rows for s in row.metric.series + row.train_loss.series):
        return LearningCurvesInfo(rows=(), note="No learning-curve points recorded yet")
    return LearningCurvesInfo(rows=tuple(rows))


def select_curve_trials(trials: pd.DataFrame, analysis: SweepAnalysis) -> list[dict[str, Any]]:
    """For each (task, optimiser), one finished trial at its best lr (a succeeded one, lowest seed first)."""
    finished = finished_trials(trials)
    chosen = []
    # Plain arrays and the rows of each (task, optimiser) once; per (task, optimiser) the rows at its best lr in a
    # stable (failed, seed) order.
    lr = finished["lr"].astype(float).to_numpy()
    failed = (finished["status"] != "succeeded").astype(int).to_numpy()
    seed = finished["seed"].to_numpy()
    rows_of = finished.groupby(["task", "label"], sort=False).indices if len(finished) else {}
    for summary in analysis.per_optimizer:
        rows = rows_of.get((summary.task, summary.label))
        if rows is None:
            continue
        matches = rows[np.isclose(lr[rows], summary.eta_star, rtol=LR_REL_TOL, atol=0.0)]
        if not len(matches):
            continue
        first = matches[np.lexsort((seed[matches], failed[matches]))[0]]
        chosen.append(finished.iloc[first].to_dict())
    return chosen


# --- drawing ------------------------------------------------------------------------------------------


def _legend_name(series: CurveSeries) -> str:
    name = f"{series.label} lr={format_number(series.lr, 'g')}" if series.lr is not None else series.label
    return name if series.seed is None else f"{name} seed {series.seed}"


def plot_learning_curves(
    info: LearningCurvesInfo, *, colors: Mapping[str, str] | None = None, title: str = "Learning curves"
) -> go.Figure:
    """One row per task: the metric (left) and the training loss (right) against step, one line per trial;
    a NaN or infinite value is an x at the top of its panel."""
    if not info.rows:
        return drawing.empty_figure(info.note or "No learning curves to show", title=title)
    labels = [series.label for row in info.rows for series in row.metric.series]
    colors = dict(colors or optimizer_colors(labels))
    titles = [text for row in info.rows for text in (f"{row.task}: {row.metric_name}", f"{row.task}: training loss")]
    fig = make_subplots(
        figure=drawing.new_figure(),
        rows=len(info.rows),
        cols=2,
        subplot_titles=titles,
        horizontal_spacing=0.1,
        vertical_spacing=min(0.3, 0.5 / len(info.rows)) if len(info.rows) > 1 else 0.1,
    )
    shown: set[str] = set()
    for row_index, row in enumerate(info.rows, start=1):
        for col, panel, y_title in ((1, row.metric, row.metric_name), (2, row.train_loss, "training loss")):
            for series in panel.series:
                name, color = _legend_name(series), color_of(colors, series.label)
                fig.add_trace(
                    go.Scatter(
                        x=list(series.steps),
                        y=list(series.values),
                        mode="lines" if len(series.steps) > 2 else "lines+markers",  # a lone point still shows
                        name=name,
                        legendgroup=series.label,
                        showlegend=series.label not in shown,
                        line={"color": color, "width": 2},
                        marker={"color": color, "size": 6},
                        hovertemplate=f"{name}: step %{{x}}: %{{y:.4g}}<extra></extra>",
                    ),
                    row=row_index,
                    col=col,
                )
                shown.add(series.label)
                if series.diverged_steps:
                    top = panel.top if panel.top is not None else 1.0
                    fig.add_trace(
                        go.Scatter(
                            x=list(series.diverged_steps),
                            y=[top] * len(series.diverged_steps),
                            mode="markers",
                            name=f"{name} diverged",
                            legendgroup=series.label,
                            showlegend=False,
                            marker={"symbol": drawing.DIVERGED_SYMBOL, "size": 10, "color": color},
                            hovertemplate=f"{name}: diverged at step %{{x}}<extra></extra>",
                            cliponaxis=False,
                        ),
                        row=row_index,
                        col=col,
                    )
            fig.update_xaxes(title_text="step", row=row_index, col=col)
            fig.update_yaxes(
                title_text=y_title,
                row=row_index,
                col=col,
                **drawing.metric_axis(panel.log_y, (v for item in panel.series for v in item.values)),
            )
    height = drawing.PANEL_HEIGHT * len(info.rows) + 90
    return drawing.finish_layout(fig, title=title, height=height, legend_rows=drawing.legend_rows(len(shown), 4))


__all__ = [
    "CurvePanel",
    "CurveRow",
    "CurveSeries",
    "LearningCurvesInfo",
    "downsample_indices",
    "learning_curves_info",
    "plot_learning_curves",
    "select_curve_trials",
]
