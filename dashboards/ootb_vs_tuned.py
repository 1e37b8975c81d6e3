"""Out of the box vs tuned: per task, each optimiser's metric at its default lr next to the one at its best lr.

:func:`ootb_vs_tuned_info` reads the numbers from the analysis (means over seeds, a diverged seed counted as the
metric at chance); :func:`plot_ootb_vs_tuned` draws them as grouped bars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import color_of, label_order, optimizer_colors, summaries_by_task_and_label, wants_log_axis
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis
from nero_study.vocabulary import same_lr


class OotbTunedBar(NamedTuple):
    """One optimiser on one task: the metric at its default lr and at its best lr (analysis means)."""

    label: str
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
    labels: tuple[str, ...] = ()  # the optimisers drawn, in order
    note: str = ""


def ootb_vs_tuned_info(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> OotbTunedInfo:
    """Per task, per optimiser: out-of-the-box metric (default lr) next to the tuned one (best lr)."""
    if not analysis.per_optimizer:
        return OotbTunedInfo(panels=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    summaries = summaries_by_task_and_label(analysis)
    panels = []
    for task in analysis.tasks:
        bars = []
        for label in order:
            summary = summaries.get((task.task, label))
            if summary is None:
                continue
            default_lr = finite_or_none(summary.default_lr)
            at_default = next((p for p in summary.curve if default_lr is not None and same_lr(p.lr, default_lr)), None)
            bars.append(
                OotbTunedBar(
                    label=label,
                    ootb=finite_or_none(summary.ootb),
                    ootb_std=None if at_default is None else finite_or_none(at_default.std),
                    default_lr=default_lr,
                    ootb_diverged=0 if at_default is None else int(at_default.diverged),
                    tuned=finite_or_none(summary.best),
                    tuned_std=finite_or_none(summary.best_std),
                    best_lr=finite_or_none(summary.eta_star),
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
    return OotbTunedInfo(panels=tuple(panels), labels=order)


def _traces(info: OotbTunedInfo, colors: Mapping[str, str], columns: int) -> list[drawing.PanelTrace]:
    traces: list[drawing.PanelTrace] = []
    for index, panel in enumerate(info.panels):
        row, col = drawing.cell(index, columns)
        labels = [bar.label for bar in panel.bars]
        bar_colors = [color_of(colors, bar.label) for bar in panel.bars]
        ootb_text = [f"{bar.ootb_diverged} diverged" if bar.ootb_diverged else "" for bar in panel.bars]
        ootb = {
            "x": labels,
            "y": [bar.ootb for bar in panel.bars],
            "error_y": {"type": "data", "array": [bar.ootb_std or 0.0 for bar in panel.bars], "visible": True},
            "name": "out of the box (default lr)",
            "legendgroup": "ootb",
            "showlegend": False,
            "marker": {"color": bar_colors, "opacity": 0.55, "pattern": {"shape": "/", "solidity": 0.4}},
            "text": ootb_text,
            "textposition": "outside",
            "customdata": [[bar.default_lr, bar.ootb_diverged] for bar in panel.bars],
            "hovertemplate": "%{x} at its default lr %{customdata[0]:g}: %{y:.4g}"
            " (%{customdata[1]} diverged)<extra>out of the box</extra>",
        }
        tuned = {
            "x": labels,
            "y": [bar.tuned for bar in panel.bars],
            "error_y": {"type": "data", "array": [bar.tuned_std or 0.0 for bar in panel.bars], "visible": True},
            "name": "tuned (best lr)",
            "legendgroup": "tuned",
            "showlegend": False,
            "marker": {"color": bar_colors},
            "customdata": [[bar.best_lr] for bar in panel.bars],
            "hovertemplate": "%{x} at its best lr %{customdata[0]:g}: %{y:.4g}<extra>tuned</extra>",
        }
        traces.extend((("bar", ootb, row, col), ("bar", tuned, row, col)))
    for name, pattern, opacity in (("out of the box (default lr)", "/", 0.55), ("tuned (best lr)", "", 1.0)):
        key = {
            "x": [None],
            "y": [None],
            "name": name,
            "legendgroup": "ootb" if pattern else "tuned",
            "marker": {"color": drawing.KEY_COLOR, "opacity": opacity, "pattern": {"shape": pattern, "solidity": 0.4}},
            "hoverinfo": "skip",
        }
        traces.append(("bar", key, 1, 1))
    return traces


def _layout_arguments(info: OotbTunedInfo, title: str) -> tuple:
    """What the layout depends on: panel titles, y axes, title."""
    axes = [
        {
            "title_text": drawing.metric_title(panel.metric_name, panel.lower_is_better),
            **drawing.metric_axis(panel.log_metric, (v for bar in panel.bars for v in (bar.ootb, bar.tuned))),
        }
        for panel in info.panels
    ]
    return [panel.task for panel in info.panels], axes, title


def _layout(titles: list[str], axes: list[dict], title: str) -> tuple[go.Figure, int]:
    fig, rows, columns = drawing.panel_grid(titles)
    for index, y_axis in enumerate(axes):
        row, col = drawing.cell(index, columns)
        fig.update_yaxes(row=row, col=col, **y_axis)
    fig.update_layout(barmode="group", bargap=0.25)
    return drawing.finish_layout(fig, title=title, height=drawing.PANEL_HEIGHT * rows + 90), columns


def plot_ootb_vs_tuned(
    info: OotbTunedInfo, *, colors: Mapping[str, str] | None = None, title: str = "Out of the box vs tuned"
) -> go.Figure:
    """Per task, each optimiser's metric at its default lr (hatched) next to the one at its best lr (solid)."""
    if not info.panels:
        return drawing.empty_figure(info.note or "No finished trials yet", title=title)
    colors = dict(colors or optimizer_colors(info.labels))
    fig, columns = _layout(*_layout_arguments(info, title))
    return drawing.draw_panel_traces(fig, _traces(info, colors, columns))


def ootb_vs_tuned_figure(
    info: OotbTunedInfo, *, colors: Mapping[str, str] | None = None, title: str = "Out of the box vs tuned",
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(plot_ootb_vs_tuned(...))`` without Plotly objects for the traces, the layout kept by
    its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws."""
    if not info.panels:
        return drawing.figure_to_dict(plot_ootb_vs_tuned(info, colors=colors, title=title), user_text=user_text)
    colors = dict(colors or optimizer_colors(info.labels))
    arguments = _layout_arguments(info, title)
    columns = max(1, min(len(info.panels), drawing.MAX_COLUMNS))
    return drawing.panel_figure_json(
        arguments, lambda: _layout(*arguments), _traces(info, colors, columns), user_text=user_text
    )


__all__ = [
    "OotbTunedBar",
    "OotbTunedInfo",
    "OotbTunedPanel",
    "ootb_vs_tuned_figure",
    "ootb_vs_tuned_info",
    "plot_ootb_vs_tuned",
]
