"""Plotly figures of a sweep. Each builder only draws the numbers of one ``*_info`` NamedTuple from
:mod:`dashboards.data`; no data gives an empty figure with a note, never an exception.

Habits shared by all figures: learning rates on a log x axis; one legend group per optimiser label (clicking
an optimiser in the legend hides all of its traces) in its fixed colour; marks: open diamond = default lr,
star = best lr, x = diverged or failed (at the top of the finite data range, so nothing is dropped and the
axis is not stretched).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from dashboards.data import (
    STATUS_COLORS,
    STATUS_ORDER,
    ExpectedBestInfo,
    HeatmapInfo,
    LearningCurvesInfo,
    LrPanel,
    LrSensitivityInfo,
    OotbTunedInfo,
    ProfilesInfo,
    ProgressInfo,
    lr_hover_texts,
)

DEFAULT_LR_SYMBOL = "diamond-open"
BEST_LR_SYMBOL = "star"
DIVERGED_SYMBOL = "x"
MARKS_GROUP = "marks"  # legend group of the key to the marks (not an optimiser)
PANEL_HEIGHT = 300  # pixels per row of panels
MAX_COLUMNS = 3
_KEY_COLOR = "#555555"
_AXIS_STYLE = {"gridcolor": "#e5ebf2", "linecolor": "#b0b8c4", "zerolinecolor": "#d5dde6", "automargin": True}
#: A light template (white background, thin grid), small and quick to build: plotly's own templates cost about
#: 0.1 s per figure to apply and 6 kB of JSON each.
TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif", "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "xaxis": _AXIS_STYLE,
        "yaxis": _AXIS_STYLE,
        "hoverlabel": {"align": "left"},
    }
)


def _figure() -> go.Figure:
    """An empty figure with the light template (never plotly's default, which is slow to apply)."""
    return go.Figure(layout={"template": TEMPLATE})


def _rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)`` (for translucent seed bands)."""
    value = color.lstrip("#")
    if len(value) != 6:
        return color
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _layout(fig: go.Figure, *, title: str, height: int, legend_rows: int = 1) -> go.Figure:
    """Title at the top left; the legend in rows under the plot (so that narrow figures keep their width)."""
    legend_height = 24 * legend_rows if legend_rows else 0
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        height=height + legend_height,
        margin={"l": 60, "r": 20, "t": 70, "b": 55 + legend_height},
        hovermode="closest",
        showlegend=legend_rows > 0,
        legend={
            "groupclick": "togglegroup",
            "traceorder": "normal",  # one row of entries (grouped order would stack each group's entries)
            "orientation": "h",
            "x": 0.0,
            "xanchor": "left",
            "y": 0.0,
            "yanchor": "bottom",
            "yref": "container",
        },
    )
    return fig


def empty_figure(note: str, *, title: str = "") -> go.Figure:
    """A figure with no data and ``note`` written in its middle (axes hidden)."""
    fig = _figure()
    fig.add_annotation(
        text=note or "No data", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title=title, height=220, legend_rows=0)


def _legend_rows(items: int, per_row: int) -> int:
    """Rows a bottom legend of ``items`` entries needs, at about ``per_row`` entries a row (half-page width)."""
    return max(1, math.ceil(items / per_row)) if items else 0


def log_ticks(values: Iterable[float | None], *, max_ticks: int = 8) -> dict[str, Any]:
    """Ticks of a log axis spanning ``values``: 1-2-5 steps when that gives at most ``max_ticks`` labels, else
    powers of ten, each labelled with its value (plotly's own minor labels are bare digits). ``{}`` when there
    are fewer than two such ticks in range (plotly's defaults are fine then)."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return {}
    low, high = min(finite), max(finite)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1,)):
        ticks = [
            float(f"{m}e{e}")
            for e in range(first, last + 1)
            for m in mantissas
            if low / 1.25 <= float(f"{m}e{e}") <= high * 1.25
        ]
        if len(ticks) <= max_ticks:
            break
    if len(ticks) < 2:
        return {}
    return {"tickmode": "array", "tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def _grid(count: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    columns = max(1, min(count, max_columns))
    return math.ceil(count / columns), columns


def _cell(index: int, columns: int) -> tuple[int, int]:
    return index // columns + 1, index % columns + 1


def _subplots(titles: Sequence[str], max_columns: int = MAX_COLUMNS) -> tuple[go.Figure, int, int]:
    rows, columns = _grid(len(titles), max_columns)
    fig = make_subplots(
        figure=_figure(),
        rows=rows,
        cols=columns,
        subplot_titles=list(titles),
        horizontal_spacing=0.08 if columns > 1 else 0.02,
        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1,
    )
    for index in range(len(titles), rows * columns):  # unused cells of the last row
        row, col = _cell(index, columns)
        fig.update_xaxes(visible=False, row=row, col=col)
        fig.update_yaxes(visible=False, row=row, col=col)
    return fig, rows, columns


def _metric_title(metric_name: str, lower_is_better: bool) -> str:
    name = metric_name or "metric"
    return f"{name} ({'lower' if lower_is_better else 'higher'} is better)"


def _mark_key(fig: go.Figure, *, row: int = 1, col: int = 1) -> None:
    """Legend entries that explain the marks (drawn nowhere: no points)."""
    for name, symbol, size in (
        ("default lr", DEFAULT_LR_SYMBOL, 11),
        ("best lr", BEST_LR_SYMBOL, 13),
        ("diverged / failed", DIVERGED_SYMBOL, 10),
    ):
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=name,
                legendgroup=MARKS_GROUP,
                marker={"symbol": symbol, "size": size, "color": _KEY_COLOR, "line": {"width": 2}},
                hoverinfo="skip",
            ),
            row=row,
            col=col,
        )


# --- learning-rate sensitivity ----------------------------------------------------------------------


def plot_lr_sensitivity(info: LrSensitivityInfo, *, title: str = "Learning-rate sensitivity") -> go.Figure:
    """One panel per task: metric against lr (log axis), a line per optimiser with a mean ± std band over
    seeds, its default lr (open diamond), its best lr (star) and its diverged/failed trials (x, at the top)."""
    if not info.panels:
        return empty_figure(info.note or "No finished trials yet", title=title)
    fig, rows, columns = _subplots([panel.task for panel in info.panels])
    shown: set[str] = set()
    for index, panel in enumerate(info.panels):
        row, col = _cell(index, columns)
        for series in panel.series:
            group, color = series.label, series.color
            band = [
                (lr, mean, std or 0.0)
                for lr, mean, std in zip(series.lrs, series.means, series.stds, strict=True)
                if mean is not None
            ]
            if any(std for _, _, std in band):
                xs = [lr for lr, _, _ in band]
                fig.add_trace(
                    go.Scatter(
                        x=xs + xs[::-1],
                        y=[m + s for _, m, s in band] + [m - s for _, m, s in band][::-1],
                        fill="toself",
                        fillcolor=_rgba(color, 0.18),
                        line={"width": 0},
                        mode="lines",
                        name=f"{group} ± std",
                        legendgroup=group,
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=row,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=list(series.lrs),
                    y=list(series.means),
                    mode="lines+markers",
                    name=group,
                    legendgroup=group,
                    showlegend=group not in shown,
                    line={"color": color, "width": 2},
                    marker={"color": color, "size": 6},
                    text=list(lr_hover_texts(series)),
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=row,
                col=col,
            )
            shown.add(group)
            marks = (  # the open diamond is drawn over the star and larger: both show when default = best
                ("best lr", [series.best_marker] if series.best_marker else [], BEST_LR_SYMBOL, 15),
                ("default lr", [series.default_marker] if series.default_marker else [], DEFAULT_LR_SYMBOL, 19),
                ("diverged / failed", list(series.diverged_markers), DIVERGED_SYMBOL, 11),
            )
            for kind, markers, symbol, size in marks:
                if not markers:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[m.x for m in markers],
                        y=[m.value for m in markers],
                        mode="markers",
                        name=f"{group} {kind}",
                        legendgroup=group,
                        showlegend=False,
                        marker={"symbol": symbol, "size": size, "color": color, "line": {"width": 2, "color": color}},
                        text=[m.text for m in markers],
                        hovertemplate="%{text}<extra></extra>",
                        cliponaxis=False,
                    ),
                    row=row,
                    col=col,
                )
        lrs = [lr for series in panel.series for lr in series.lrs]
        fig.update_xaxes(type="log", title_text="learning rate", row=row, col=col, **log_ticks(lrs))
        fig.update_yaxes(
            type="log" if panel.log_metric else "linear",
            title_text=_metric_title(panel.metric_name, panel.lower_is_better),
            row=row,
            col=col,
            **(log_ticks(_lr_values(panel)) if panel.log_metric else {}),
        )
    _mark_key(fig)
    return _layout(fig, title=title, height=PANEL_HEIGHT * rows + 90, legend_rows=_legend_rows(len(info.labels) + 3, 5))


def _lr_values(panel: LrPanel) -> list[float]:
    """The y values drawn on an lr-sensitivity panel (means, band edges, the top)."""
    values = [panel.top]
    for series in panel.series:
        for mean, std in zip(series.means, series.stds, strict=True):
            if mean is not None:
                values.extend((mean, mean + (std or 0.0), mean - (std or 0.0)))
    return values


# --- out of the box vs tuned ------------------------------------------------------------------------


def plot_ootb_vs_tuned(info: OotbTunedInfo, *, title: str = "Out of the box vs tuned") -> go.Figure:
    """Per task, each optimiser's metric at its default lr (hatched) next to the one at its best lr (solid)."""
    if not info.panels:
        return empty_figure(info.note or "No finished trials yet", title=title)
    fig, rows, columns = _subplots([panel.task for panel in info.panels])
    for index, panel in enumerate(info.panels):
        row, col = _cell(index, columns)
        labels = [bar.label for bar in panel.bars]
        colors = [bar.color for bar in panel.bars]
        ootb_text = [f"{bar.ootb_diverged} diverged" if bar.ootb_diverged else "" for bar in panel.bars]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[bar.ootb for bar in panel.bars],
                error_y={"type": "data", "array": [bar.ootb_std or 0.0 for bar in panel.bars], "visible": True},
                name="out of the box (default lr)",
                legendgroup="ootb",
                showlegend=False,
                marker={"color": colors, "opacity": 0.55, "pattern": {"shape": "/", "solidity": 0.4}},
                text=ootb_text,
                textposition="outside",
                customdata=[[bar.default_lr, bar.ootb_diverged] for bar in panel.bars],
                hovertemplate="%{x} at its default lr %{customdata[0]:g}: %{y:.4g}"
                " (%{customdata[1]} diverged)<extra>out of the box</extra>",
            ),
            row=row,
            col=col,
        )
        fig.add_trace(
            go.Bar(
                x=labels,
                y=[bar.tuned for bar in panel.bars],
                error_y={"type": "data", "array": [bar.tuned_std or 0.0 for bar in panel.bars], "visible": True},
                name="tuned (best lr)",
                legendgroup="tuned",
                showlegend=False,
                marker={"color": colors},
                customdata=[[bar.best_lr] for bar in panel.bars],
                hovertemplate="%{x} at its best lr %{customdata[0]:g}: %{y:.4g}<extra>tuned</extra>",
            ),
            row=row,
            col=col,
        )
        fig.update_yaxes(
            type="log" if panel.log_metric else "linear",
            title_text=_metric_title(panel.metric_name, panel.lower_is_better),
            row=row,
            col=col,
            **(log_ticks(v for bar in panel.bars for v in (bar.ootb, bar.tuned)) if panel.log_metric else {}),
        )
    for name, pattern, opacity in (("out of the box (default lr)", "/", 0.55), ("tuned (best lr)", "", 1.0)):
        fig.add_trace(
            go.Bar(
                x=[None],
                y=[None],
                name=name,
                legendgroup="ootb" if pattern else "tuned",
                marker={"color": _KEY_COLOR, "opacity": opacity, "pattern": {"shape": pattern, "solidity": 0.4}},
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    fig.update_layout(barmode="group", bargap=0.25)
    return _layout(fig, title=title, height=PANEL_HEIGHT * rows + 90)


# --- normalised heatmap -----------------------------------------------------------------------------


def plot_normalized_heatmap(
    info: HeatmapInfo, *, title: str = "Normalised score (0 = chance, 1 = best of all optimisers)"
) -> go.Figure:
    """Tasks x optimisers, coloured by normalised score, at the default lr and at the tuned lr, side by side."""
    if not info.tasks or not info.labels:
        return empty_figure(info.note or "No finished trials yet", title=title)
    fig = make_subplots(
        figure=_figure(),
        rows=1,
        cols=2,
        subplot_titles=["out of the box (default lr)", "tuned (best lr)"],
        horizontal_spacing=0.04,
        shared_yaxes=True,
    )
    for col, values in ((1, info.ootb), (2, info.tuned)):
        fig.add_trace(
            go.Heatmap(
                z=[list(row) for row in values],
                x=list(info.labels),
                y=list(info.tasks),
                coloraxis="coloraxis",
                texttemplate="%{z:.3f}",
                hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>",
                xgap=2,
                ygap=2,
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": "score"}})
    return _layout(fig, title=title, height=max(260, 150 + 45 * len(info.tasks)), legend_rows=0)


# --- performance profiles ---------------------------------------------------------------------------


def plot_performance_profiles(info: ProfilesInfo, *, title: str = "Performance profiles over tasks") -> go.Figure:
    """rho(tau) per optimiser at the default lr and at the tuned lr; the legend gives both profile scores."""
    if not info.tuned:
        return empty_figure(info.note or "No finished trials yet", title=title)
    fig = make_subplots(
        figure=_figure(),
        rows=1,
        cols=2,
        subplot_titles=["out of the box (default lr)", "tuned (best lr)"],
        shared_yaxes=True,
    )
    scores = {curve.label: [None, None] for curve in info.tuned}
    for curve in info.ootb:
        scores.setdefault(curve.label, [None, None])[0] = curve.score
    for curve in info.tuned:
        scores[curve.label][1] = curve.score

    def text(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    shown: set[str] = set()
    for col, curves, kind in ((1, info.ootb, "out of the box"), (2, info.tuned, "tuned")):
        for curve in curves:
            ootb_score, tuned_score = scores[curve.label]
            fig.add_trace(
                go.Scatter(
                    x=list(curve.taus),
                    y=list(curve.rho),
                    mode="lines",
                    line={"shape": "hv", "color": curve.color, "width": 2.5},
                    name=f"{curve.label}: score {text(ootb_score)} ootb, {text(tuned_score)} tuned",
                    legendgroup=curve.label,
                    showlegend=curve.label not in shown,
                    hovertemplate=f"{curve.label} ({kind}): %{{y:.0%}} of tasks within %{{x:.2f}}x<extra></extra>",
                ),
                row=1,
                col=col,
            )
            shown.add(curve.label)
        fig.update_xaxes(title_text="tau (ratio to the best)", range=[1.0, info.tau_max], row=1, col=col)
    fig.update_yaxes(title_text=f"fraction of {info.tasks} task(s) within tau", range=[-0.03, 1.05], row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.05], row=1, col=2)
    return _layout(fig, title=title, height=PANEL_HEIGHT + 90, legend_rows=_legend_rows(len(scores), 2))


# --- expected best after k trials -------------------------------------------------------------------


def plot_expected_best(
    info: ExpectedBestInfo, *, title: str = "Expected best after k random learning rates"
) -> go.Figure:
    """Per task, per optimiser: the expected best metric of k lrs drawn uniformly from its grid, k = 1..|G|."""
    if not info.panels:
        return empty_figure(info.note or "No finished trials yet", title=title)
    fig, rows, columns = _subplots([panel.task for panel in info.panels])
    shown: set[str] = set()
    for index, panel in enumerate(info.panels):
        row, col = _cell(index, columns)
        for series in panel.series:
            fig.add_trace(
                go.Scatter(
                    x=list(series.ks),
                    y=list(series.values),
                    mode="lines+markers",
                    name=series.label,
                    legendgroup=series.label,
                    showlegend=series.label not in shown,
                    line={"color": series.color, "width": 2},
                    marker={"color": series.color, "size": 6},
                    hovertemplate=f"{series.label}: best of %{{x}} lr(s) ≈ %{{y:.4g}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
            shown.add(series.label)
        fig.update_xaxes(title_text="k (learning rates tried)", dtick=1, row=row, col=col)
        fig.update_yaxes(
            type="log" if panel.log_metric else "linear",
            title_text=_metric_title(panel.metric_name, panel.lower_is_better),
            row=row,
            col=col,
            **(log_ticks(v for item in panel.series for v in item.values) if panel.log_metric else {}),
        )
    return _layout(fig, title=title, height=PANEL_HEIGHT * rows + 90, legend_rows=_legend_rows(len(shown), 6))


# --- learning curves --------------------------------------------------------------------------------


def plot_learning_curves(info: LearningCurvesInfo, *, title: str = "Learning curves") -> go.Figure:
    """One row per task: the metric (left) and the training loss (right) against step, one line per trial;
    a NaN or infinite value is an x at the top of its panel."""
    if not info.rows:
        return empty_figure(info.note or "No learning curves to show", title=title)
    titles = [title for row in info.rows for title in (row.metric.title, row.train_loss.title)]
    fig = make_subplots(
        figure=_figure(),
        rows=len(info.rows),
        cols=2,
        subplot_titles=titles,
        horizontal_spacing=0.1,
        vertical_spacing=min(0.3, 0.5 / len(info.rows)) if len(info.rows) > 1 else 0.1,
    )
    shown: set[str] = set()
    for row_index, row in enumerate(info.rows, start=1):
        for col, panel in ((1, row.metric), (2, row.train_loss)):
            for series in panel.series:
                fig.add_trace(
                    go.Scatter(
                        x=list(series.steps),
                        y=list(series.values),
                        mode="lines" if len(series.steps) > 2 else "lines+markers",  # a lone point still shows
                        name=series.name,
                        legendgroup=series.label,
                        showlegend=series.label not in shown,
                        line={"color": series.color, "width": 2},
                        marker={"color": series.color, "size": 6},
                        hovertemplate=f"{series.name}: step %{{x}}: %{{y:.4g}}<extra></extra>",
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
                            name=f"{series.name} diverged",
                            legendgroup=series.label,
                            showlegend=False,
                            marker={"symbol": DIVERGED_SYMBOL, "size": 10, "color": series.color},
                            hovertemplate=f"{series.name}: diverged at step %{{x}}<extra></extra>",
                            cliponaxis=False,
                        ),
                        row=row_index,
                        col=col,
                    )
            fig.update_xaxes(title_text="step", row=row_index, col=col)
            fig.update_yaxes(
                type="log" if panel.log_y else "linear",
                title_text=panel.y_title,
                row=row_index,
                col=col,
                **(log_ticks(v for item in panel.series for v in item.values) if panel.log_y else {}),
            )
    return _layout(fig, title=title, height=PANEL_HEIGHT * len(info.rows) + 90, legend_rows=_legend_rows(len(shown), 4))


# --- sweep progress ---------------------------------------------------------------------------------


def plot_sweep_progress(info: ProgressInfo, *, title: str = "Trials by status over time") -> go.Figure:
    """A stacked area of the number of trials in each status against wall-clock time (UTC)."""
    if not info.times:
        return empty_figure(info.note or "No trials yet", title=title)
    fig = _figure()
    times = [time.isoformat() for time in info.times]
    for status in STATUS_ORDER:
        values = info.counts.get(status, ())
        if not any(values):
            continue
        fig.add_trace(
            go.Scatter(
                x=times,
                y=list(values),
                mode="lines",
                name=status,
                stackgroup="trials",
                line={"shape": "hv", "width": 0.5, "color": STATUS_COLORS[status]},
                fillcolor=_rgba(STATUS_COLORS[status], 0.75),
                hovertemplate=f"{status}: %{{y}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="time (UTC)")
    fig.update_yaxes(title_text=f"trials (of {info.total})", rangemode="tozero")
    return _layout(fig, title=title, height=PANEL_HEIGHT + 40)


# --- serialising ------------------------------------------------------------------------------------


def figure_to_dict(fig: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON-safe dicts (``data``, ``layout``) for Plotly.js; NaN and inf become null."""
    return json.loads(pio.to_json(fig, validate=False, remove_uids=True))


__all__ = [
    "BEST_LR_SYMBOL",
    "DEFAULT_LR_SYMBOL",
    "DIVERGED_SYMBOL",
    "MARKS_GROUP",
    "empty_figure",
    "log_ticks",
    "figure_to_dict",
    "plot_expected_best",
    "plot_learning_curves",
    "plot_lr_sensitivity",
    "plot_normalized_heatmap",
    "plot_ootb_vs_tuned",
    "plot_performance_profiles",
    "plot_sweep_progress",
]
