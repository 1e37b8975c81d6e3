"""Expected best after k trials: per task and optimiser, the expected best metric of k learning rates drawn at
random from its grid, k = 1..|G| (the analysis's ``expected_best``: how much tuning an optimiser needs).

:func:`expected_best_info` reads the numbers; :func:`plot_expected_best` draws one line per optimiser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import color_of, label_order, optimizer_colors, summaries_by_task_and_label, wants_log_axis
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis


class ExpectedBestSeries(NamedTuple):
    label: str
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
    labels: tuple[str, ...] = ()  # the optimisers drawn, in order
    note: str = ""


def expected_best_info(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> ExpectedBestInfo:
    """Per task, per optimiser: the expected best metric after k lrs drawn at random from its grid."""
    if not analysis.per_optimizer:
        return ExpectedBestInfo(panels=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    summaries = summaries_by_task_and_label(analysis)
    panels = []
    for task in analysis.tasks:
        series = []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                continue
            values = tuple(finite_or_none(v) for v in summary.expected_best)
            series.append(ExpectedBestSeries(label=label, ks=tuple(range(1, len(values) + 1)), values=values))
        panels.append(
            ExpectedBestPanel(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                log_metric=wants_log_axis(v for item in series for v in item.values),
                series=tuple(series),
            )
        )
    return ExpectedBestInfo(panels=tuple(panels), labels=order)


def _traces(info: ExpectedBestInfo, colors: Mapping[str, str], columns: int) -> list[drawing.PanelTrace]:
    traces: list[drawing.PanelTrace] = []
    shown: set[str] = set()
    for index, panel in enumerate(info.panels):
        row, col = drawing.cell(index, columns)
        for series in panel.series:
            color = color_of(colors, series.label)
            props = {
                "x": list(series.ks),
                "y": list(series.values),
                "mode": "lines+markers",
                "name": series.label,
                "legendgroup": series.label,
                "showlegend": series.label not in shown,
                "line": {"color": color, "width": 2},
                "marker": {"color": color, "size": 6},
                "hovertemplate": f"{series.label}: best of %{{x}} lr(s) ≈ %{{y:.4g}}<extra></extra>",
            }
            traces.append(("scatter", props, row, col))
            shown.add(series.label)
    return traces


def _layout_arguments(info: ExpectedBestInfo, title: str) -> tuple:
    """What the layout depends on: panel titles, y axes, legend entries, title."""
    axes = [
        {
            "title_text": drawing.metric_title(panel.metric_name, panel.lower_is_better),
            **drawing.metric_axis(panel.log_metric, (v for item in panel.series for v in item.values)),
        }
        for panel in info.panels
    ]
    shown = len({series.label for panel in info.panels for series in panel.series})
    return [panel.task for panel in info.panels], axes, shown, title


def _layout(titles: list[str], axes: list[dict], shown: int, title: str) -> tuple[go.Figure, int]:
    fig, rows, columns = drawing.panel_grid(titles)
    for index, y_axis in enumerate(axes):
        row, col = drawing.cell(index, columns)
        fig.update_xaxes(title_text="k (learning rates tried)", dtick=1, row=row, col=col)
        fig.update_yaxes(row=row, col=col, **y_axis)
    height = drawing.PANEL_HEIGHT * rows + 90
    return drawing.finish_layout(fig, title=title, height=height, legend_rows=drawing.legend_rows(shown, 6)), columns


def plot_expected_best(
    info: ExpectedBestInfo,
    *,
    colors: Mapping[str, str] | None = None,
    title: str = "Expected best after k random learning rates",
) -> go.Figure:
    """Per task, per optimiser: the expected best metric of k lrs drawn uniformly from its grid, k = 1..|G|."""
    if not info.panels:
        return drawing.empty_figure(info.note or "No finished trials yet", title=title)
    colors = dict(colors or optimizer_colors(info.labels))
    fig, columns = _layout(*_layout_arguments(info, title))
    return drawing.draw_panel_traces(fig, _traces(info, colors, columns))


def expected_best_figure(
    info: ExpectedBestInfo,
    *,
    colors: Mapping[str, str] | None = None,
    title: str = "Expected best after k random learning rates",
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(plot_expected_best(...))`` without Plotly objects for the traces, the layout kept by
    its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws."""
    if not info.panels:
        return drawing.figure_to_dict(plot_expected_best(info, colors=colors, title=title), user_text=user_text)
    colors = dict(colors or optimizer_colors(info.labels))
    arguments = _layout_arguments(info, title)
    columns = max(1, min(len(info.panels), drawing.MAX_COLUMNS))
    return drawing.panel_figure_json(
        arguments, lambda: _layout(*arguments), _traces(info, colors, columns), user_text=user_text
    )


__all__ = [
    "ExpectedBestInfo",
    "ExpectedBestPanel",
    "ExpectedBestSeries",
    "expected_best_figure",
    "expected_best_info",
    "plot_expected_best",
]
