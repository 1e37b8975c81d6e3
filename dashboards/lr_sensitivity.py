"""Learning-rate sensitivity: per task, the metric against the lr grid for every optimiser.

:func:`lr_sensitivity_info` computes the numbers; :func:`plot_lr_sensitivity` draws them (hover text, colours and
the spreading of overlapping marks are drawing, so they live there).

The line and band are the mean and sample standard deviation (ddof=1) over the seeds that ended with a finite
metric; a diverged or failed trial is never averaged in (its metric is NaN or inf) and never dropped either: it
becomes a mark at the *top of the finite data range* of its panel, so it is visible without stretching the
axis. The best-lr and default-lr marks come from the analysis (where a diverged trial counts as the metric at
chance). Metrics are in the task's own orientation. Under the ``bracket`` protocol each point's hover text names
the round that added its lr.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import (
    color_of,
    finished_trials,
    label_order,
    optimizer_colors,
    summaries_by_task_and_label,
    wants_log_axis,
)
from nero_study.formatting import format_number
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import OptimizerSummary, SweepAnalysis, analyze_sweep
from nero_study.vocabulary import LR_REL_TOL, bracket_round, same_lr

#: Horizontal spread between the diverged marks of different optimisers at one lr, in decades (~8%).
DODGE_DECADES = 0.035


class Marker(NamedTuple):
    """One mark on a panel: learning rate ``lr`` (x) at metric ``value`` (y)."""

    lr: float
    value: float


class LrSeries(NamedTuple):
    """One optimiser label on one task: mean ± std over seeds per lr, and its marks."""

    label: str
    optimizer: str
    lrs: tuple[float, ...]  # the grid, ascending
    means: tuple[float | None, ...]  # over seeds with a finite metric; None where every seed diverged/failed
    stds: tuple[float | None, ...]  # sample std (ddof=1); None with fewer than two finite seeds
    seeds: tuple[int, ...]  # finished trials per lr
    diverged: tuple[int, ...]  # diverged (or no finite metric) per lr
    failed: tuple[int, ...]  # failed per lr
    default_lr: float | None
    best_lr: float | None  # eta* of the analysis
    best: float | None  # the analysis's metric at eta* (a diverged seed counted at chance)
    default_marker: Marker | None  # at the default lr (None when the default lr was not run)
    best_marker: Marker | None  # at eta*
    diverged_markers: tuple[Marker, ...]  # one per lr with a diverged or failed trial, at the panel's top
    rounds: tuple[int | None, ...] = ()  # per lr, the bracket round that added it (None: not a bracket sweep)


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


def _mean_at(series: LrSeries, lr: float) -> float | None:
    """The series' mean over finite seeds at ``lr`` (``None`` when ``lr`` is off its grid or all diverged)."""
    index = next((i for i, x in enumerate(series.lrs) if same_lr(x, lr)), None)
    return None if index is None else series.means[index]


def _seed_stats(rows: pd.DataFrame, summary: OptimizerSummary) -> LrSeries:
    """The series of one (task, optimiser) with its per-lr numbers filled in and no marks yet."""
    lrs, means, stds, seeds, diverged, failed = [], [], [], [], [], []
    # Plain arrays once per (task, optimiser), then one mask per grid point (no frame indexing per point).
    lr_values = rows["lr"].astype(float).to_numpy()
    metric = pd.to_numeric(rows["metric"], errors="coerce").astype(float).to_numpy()
    status = rows["status"].to_numpy()
    ok_rows = (status == "succeeded") & np.isfinite(metric)
    failed_rows = status == "failed"
    # The bracket round of each row that has one (a plain grid has none): (row position, round).
    phases = rows["phase"].tolist() if "phase" in rows else []
    round_of = {phase: bracket_round(phase) for phase in set(phases)}
    in_rounds = [(i, round_of[phase]) for i, phase in enumerate(phases) if round_of[phase] is not None]
    rounds: list[int | None] = []
    for point in summary.curve:
        at = np.isclose(lr_values, point.lr, rtol=LR_REL_TOL, atol=0.0)
        ok = at & ok_rows
        values = metric[ok]
        lrs.append(float(point.lr))
        means.append(float(values.mean()) if len(values) else None)
        stds.append(float(values.std(ddof=1)) if len(values) > 1 else None)
        seeds.append(int(at.sum()))
        failed.append(int((at & failed_rows).sum()))
        diverged.append(int(seeds[-1] - ok.sum() - failed[-1]))
        added = [index for i, index in in_rounds if at[i]]
        rounds.append(min(added) if added else None)
    return LrSeries(
        label=summary.label,
        optimizer=summary.optimizer,
        lrs=tuple(lrs),
        means=tuple(means),
        stds=tuple(stds),
        seeds=tuple(seeds),
        diverged=tuple(diverged),
        failed=tuple(failed),
        default_lr=finite_or_none(summary.default_lr),
        best_lr=finite_or_none(summary.eta_star),
        best=finite_or_none(summary.best),
        default_marker=None,
        best_marker=None,
        diverged_markers=(),
        rounds=tuple(rounds),
    )


def _with_marks(series: LrSeries, top: float) -> LrSeries:
    """``series`` with its default-lr, best-lr and diverged marks (a mark with no finite mean sits at ``top``)."""

    def at(lr: float) -> Marker:
        value = _mean_at(series, lr)
        return Marker(lr=lr, value=top if value is None else value)

    default_lr, best_lr = series.default_lr, series.best_lr
    on_grid = default_lr is not None and any(same_lr(x, default_lr) for x in series.lrs)
    bad = zip(series.lrs, series.diverged, series.failed, strict=True)
    return series._replace(
        default_marker=at(default_lr) if on_grid and default_lr is not None else None,
        best_marker=None if best_lr is None else at(best_lr),
        diverged_markers=tuple(Marker(lr=lr, value=top) for lr, d, f in bad if d + f > 0),
    )


def lr_sensitivity_info(
    trials: pd.DataFrame, analysis: SweepAnalysis | None = None, *, labels: Sequence[str] | None = None
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
    summaries = summaries_by_task_and_label(analysis)
    panels = []
    # One pass over the trials: each (task, label)'s rows, in their order in ``trials``.
    groups = {key: rows for key, rows in finished.groupby(["task", "label"], sort=False)}
    no_rows = finished.iloc[0:0]
    for task in analysis.tasks:
        series = [
            _seed_stats(groups.get((task.task, label), no_rows), summaries[(task.task, label)])
            for label in order
            if (task.task, label) in summaries
        ]
        spans = [
            (mean, std or 0.0)
            for item in series
            for mean, std in zip(item.means, item.stds, strict=True)
            if mean is not None
        ]
        highs = [value for mean, std in spans for value in (mean, mean + std)]
        m0 = finite_or_none(task.initial_metric)
        top = max(highs) if highs else (m0 if m0 is not None else 1.0)
        panels.append(
            LrPanel(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                initial_metric=m0,
                top=float(top),
                log_metric=wants_log_axis([*highs, *(mean - std for mean, std in spans)]),
                series=tuple(_with_marks(item, float(top)) for item in series),
            )
        )
    used = tuple(label for label in order if any(s.label == label for p in panels for s in p.series))
    return LrSensitivityInfo(panels=tuple(panels), labels=used)


# --- drawing ------------------------------------------------------------------------------------------


def _hover_text(
    label: str, lr: float, mean: float | None, std: float | None, seeds: int, bad: int, added: int | None = None
) -> str:
    spread = f" ± {format_number(std, '.2g')}" if std is not None else ""
    extra = f", {bad} diverged/failed" if bad else ""
    plural = "s" if seeds != 1 else ""
    where = f"; bracket round {added}" if added is not None else ""
    return f"{label} lr={format_number(lr, 'g')}: {format_number(mean)}{spread} ({seeds} seed{plural}{extra}{where})"


def _dodge(panel: LrPanel) -> Callable[[str, float], float]:
    """Where a diverged mark of ``label`` at ``lr`` is drawn: at its lr, spread by a few percent from the marks
    of the other optimisers at the same lr (in series order, centred on the lr) so that none hides another."""
    at_lr: dict[float, list[str]] = {}
    for series in panel.series:
        for marker in series.diverged_markers:
            at_lr.setdefault(round(math.log10(marker.lr), 9), []).append(series.label)

    def x(label: str, lr: float) -> float:
        here = at_lr[round(math.log10(lr), 9)]
        return lr * 10 ** (DODGE_DECADES * (here.index(label) - (len(here) - 1) / 2))

    return x


def _marks(series: LrSeries, dodge: Callable[[str, float], float]) -> list[tuple[str, list, str, int]]:
    """(kind, [(x, y, hover text)], symbol, size) of each kind of mark of ``series``."""
    label, default, best = series.label, series.default_marker, series.best_marker
    index = {lr: i for i, lr in enumerate(series.lrs)}
    bad = []
    for marker in series.diverged_markers:
        i = index[marker.lr]
        counts = f"{series.diverged[i]} diverged, {series.failed[i]} failed of {series.seeds[i]}"
        bad.append((dodge(label, marker.lr), marker.value, f"{label} lr={format_number(marker.lr, 'g')}: {counts}"))
    best_points, default_points = [], []
    if best is not None:
        shown = format_number(series.best if _mean_at(series, best.lr) is not None else None)
        best_points.append((best.lr, best.value, f"{label} best lr {format_number(best.lr, 'g')}: {shown}"))
    if default is not None:
        mean = _mean_at(series, default.lr)
        shown = format_number(mean) if mean is not None else "diverged"
        default_points.append(
            (default.lr, default.value, f"{label} default lr {format_number(default.lr, 'g')}: {shown}")
        )
    return [  # the open diamond is drawn over the star and larger: both show when default = best
        ("best lr", best_points, drawing.BEST_LR_SYMBOL, 15),
        ("default lr", default_points, drawing.DEFAULT_LR_SYMBOL, 19),
        ("diverged / failed", bad, drawing.DIVERGED_SYMBOL, 11),
    ]


def _y_values(panel: LrPanel) -> list[float]:
    """The y values drawn on a panel (means, band edges, the top)."""
    values = [panel.top]
    for series in panel.series:
        for mean, std in zip(series.means, series.stds, strict=True):
            if mean is not None:
                values.extend((mean, mean + (std or 0.0), mean - (std or 0.0)))
    return values


def _series_traces(
    series: LrSeries, color: str, dodge: Callable[[str, float], float], *, legend: bool
) -> list[dict[str, Any]]:
    """The ``go.Scatter`` arguments of one optimiser on one panel: its band (mean ± std), mean line and marks."""
    traces: list[dict[str, Any]] = []
    group = series.label
    band = [(lr, m, s or 0.0) for lr, m, s in zip(series.lrs, series.means, series.stds, strict=True) if m is not None]
    if any(std for _, _, std in band):
        xs = [lr for lr, _, _ in band]
        upper, lower = [m + s for _, m, s in band], [m - s for _, m, s in band]
        traces.append(
            {
                "x": xs + xs[::-1],
                "y": upper + lower[::-1],
                "fill": "toself",
                "fillcolor": drawing.rgba(color, 0.18),
                "line": {"width": 0},
                "mode": "lines",
                "name": f"{group} ± std",
                "legendgroup": group,
                "showlegend": False,
                "hoverinfo": "skip",
            }
        )
    rounds = series.rounds or (None,) * len(series.lrs)
    texts = [
        _hover_text(group, lr, mean, std, n, d + f, added)
        for lr, mean, std, n, d, f, added in zip(
            series.lrs, series.means, series.stds, series.seeds, series.diverged, series.failed, rounds, strict=True
        )
    ]
    traces.append(
        {
            "x": list(series.lrs),
            "y": list(series.means),
            "mode": "lines+markers",
            "name": group,
            "legendgroup": group,
            "showlegend": legend,
            "line": {"color": color, "width": 2},
            "marker": {"color": color, "size": 6},
            "text": texts,
            "hovertemplate": "%{text}<extra></extra>",
        }
    )
    for kind, points, symbol, size in _marks(series, dodge):
        if points:
            traces.append(
                {
                    "x": [x for x, _, _ in points],
                    "y": [y for _, y, _ in points],
                    "mode": "markers",
                    "name": f"{group} {kind}",
                    "legendgroup": group,
                    "showlegend": False,
                    "marker": {"symbol": symbol, "size": size, "color": color, "line": {"width": 2, "color": color}},
                    "text": [text for _, _, text in points],
                    "hovertemplate": "%{text}<extra></extra>",
                    "cliponaxis": False,
                }
            )
    return traces


def _panel_traces(info: LrSensitivityInfo, colors: Mapping[str, str], columns: int) -> list[list[tuple]]:
    """Per panel, ``(go.Scatter arguments, row, col)`` of every optimiser's traces, in drawing order."""
    shown: set[str] = set()
    panels = []
    for index, panel in enumerate(info.panels):
        row, col = drawing.cell(index, columns)
        dodge = _dodge(panel)
        traces = []
        for series in panel.series:
            color = color_of(colors, series.label)
            drawn = _series_traces(series, color, dodge, legend=series.label not in shown)
            traces.extend((kwargs, row, col) for kwargs in drawn)
            shown.add(series.label)
        panels.append(traces)
    return panels


def _panel_axes(panel: LrPanel) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments of ``update_xaxes`` and ``update_yaxes`` for one panel."""
    lrs = [lr for series in panel.series for lr in series.lrs]
    x_axis = {"type": "log", "title_text": "learning rate", **drawing.log_ticks(lrs)}
    y_axis = {
        "title_text": drawing.metric_title(panel.metric_name, panel.lower_is_better),
        **drawing.metric_axis(panel.log_metric, _y_values(panel)),
    }
    return x_axis, y_axis


def _layout_panel(fig: go.Figure, axes: tuple[dict[str, Any], dict[str, Any]], *, row: int, col: int) -> None:
    x_axis, y_axis = axes
    fig.update_xaxes(row=row, col=col, **x_axis)
    fig.update_yaxes(row=row, col=col, **y_axis)


def _finish(fig: go.Figure, info: LrSensitivityInfo, rows: int, title: str) -> go.Figure:
    height = drawing.PANEL_HEIGHT * rows + 90
    return drawing.finish_layout(
        fig, title=title, height=height, legend_rows=drawing.legend_rows(len(info.labels) + 3, 5)
    )


def plot_lr_sensitivity(
    info: LrSensitivityInfo, *, colors: Mapping[str, str] | None = None, title: str = "Learning-rate sensitivity"
) -> go.Figure:
    """One panel per task: metric against lr (log axis), a line per optimiser with a mean ± std band over
    seeds, its default lr (open diamond), its best lr (star) and its diverged/failed trials (x, at the top).
    ``colors`` maps labels to colours (default: :func:`~dashboards.common.optimizer_colors` of the labels)."""
    if not info.panels:
        return drawing.empty_figure(info.note or "No finished trials yet", title=title)
    colors = dict(colors or optimizer_colors(info.labels))
    fig, rows, columns = drawing.panel_grid([panel.task for panel in info.panels])
    for index, (panel, traces) in enumerate(zip(info.panels, _panel_traces(info, colors, columns), strict=True)):
        for kwargs, row, col in traces:
            fig.add_trace(go.Scatter(**kwargs), row=row, col=col)
        row, col = drawing.cell(index, columns)
        _layout_panel(fig, _panel_axes(panel), row=row, col=col)
    drawing.add_mark_key(fig)
    return _finish(fig, info, rows, title)


def _layout(
    titles: list[str], axes: list[tuple[dict[str, Any], dict[str, Any]]], labels: int, title: str
) -> tuple[go.Figure, int]:
    fig, rows, columns = drawing.panel_grid(titles)
    for index, panel_axes in enumerate(axes):
        row, col = drawing.cell(index, columns)
        _layout_panel(fig, panel_axes, row=row, col=col)
    height = drawing.PANEL_HEIGHT * rows + 90
    legend = drawing.legend_rows(labels + 3, 5)
    return drawing.finish_layout(fig, title=title, height=height, legend_rows=legend), columns


def lr_sensitivity_figure(
    info: LrSensitivityInfo, *, colors: Mapping[str, str] | None = None, title: str = "Learning-rate sensitivity",
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(plot_lr_sensitivity(...))`` without Plotly objects for the traces, the layout kept by
    its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws (10,000 trials:
    ~300 ms -> ~10 ms once the layout is kept)."""
    if not info.panels:
        return drawing.figure_to_dict(plot_lr_sensitivity(info, colors=colors, title=title), user_text=user_text)
    colors = dict(colors or optimizer_colors(info.labels))
    arguments = ([panel.task for panel in info.panels], [_panel_axes(panel) for panel in info.panels],
                 len(info.labels), title)  # fmt: skip
    columns = max(1, min(len(info.panels), drawing.MAX_COLUMNS))
    panels = _panel_traces(info, colors, columns)
    traces = [("scatter", kwargs, row, col) for panel in panels for kwargs, row, col in panel]
    traces.extend(("scatter", kwargs, 1, 1) for kwargs in drawing.mark_key_traces())
    return drawing.panel_figure_json(
        arguments, lambda: _layout(*arguments), traces, user_text=user_text
    )


__all__ = [
    "LrPanel",
    "LrSensitivityInfo",
    "LrSeries",
    "Marker",
    "lr_sensitivity_figure",
    "lr_sensitivity_info",
    "plot_lr_sensitivity",
]
