"""The normalised-score heatmap: tasks x optimisers, 0 = chance, 1 = the best of all optimisers on the task.

:func:`normalized_score_info` computes the scores from the analysis; :func:`plot_normalized_heatmap` draws the
out-of-the-box and tuned heatmaps side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import label_order, summaries_by_task_and_label
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis


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
    metric, m0, best_all = finite_or_none(metric), finite_or_none(m0), finite_or_none(best_all)
    if metric is None or m0 is None or best_all is None or m0 == best_all:
        return None
    return (m0 - metric) / (m0 - best_all)


def normalized_score_info(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> HeatmapInfo:
    """The out-of-the-box and tuned normalised scores of every (task, optimiser)."""
    if not analysis.per_optimizer:
        return HeatmapInfo(tasks=(), labels=(), ootb=(), tuned=(), note="No finished trials yet")
    order = label_order(analysis, labels)
    order = tuple(label for label in order if any(s.label == label for s in analysis.per_optimizer))
    summaries = summaries_by_task_and_label(analysis)
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


def _traces(info: HeatmapInfo) -> list[drawing.PanelTrace]:
    return [
        (
            "heatmap",
            {
                "z": [list(row) for row in values],
                "x": list(info.labels),
                "y": list(info.tasks),
                "coloraxis": "coloraxis",
                "texttemplate": "%{z:.3f}",
                "hovertemplate": "%{y} / %{x}: %{z:.3f}<extra></extra>",
                "xgap": 2,
                "ygap": 2,
            },
            1,
            col,
        )
        for col, values in ((1, info.ootb), (2, info.tuned))
    ]


def _layout(tasks: int, title: str) -> tuple[go.Figure, int]:
    fig = drawing.ootb_and_tuned_panels(horizontal_spacing=0.04)
    for col in (1, 2):
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": "score"}})
    height = max(260, 150 + 45 * tasks)
    return drawing.finish_layout(fig, title=title, height=height, legend_rows=0), 2


def plot_normalized_heatmap(
    info: HeatmapInfo, *, title: str = "Normalised score (0 = chance, 1 = best of all optimisers)"
) -> go.Figure:
    """Tasks x optimisers, coloured by normalised score, at the default lr and at the tuned lr, side by side."""
    if not info.tasks or not info.labels:
        return drawing.empty_figure(info.note or "No finished trials yet", title=title)
    fig, _ = _layout(len(info.tasks), title)
    return drawing.draw_panel_traces(fig, _traces(info))


def normalized_heatmap_figure(
    info: HeatmapInfo, *, title: str = "Normalised score (0 = chance, 1 = best of all optimisers)",
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(plot_normalized_heatmap(...))`` without Plotly objects for the traces, the layout kept
    by its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws."""
    if not info.tasks or not info.labels:
        return drawing.figure_to_dict(plot_normalized_heatmap(info, title=title), user_text=user_text)
    return drawing.panel_figure_json(
        (len(info.tasks), title), lambda: _layout(len(info.tasks), title), _traces(info), user_text=user_text
    )


__all__ = [
    "HeatmapInfo",
    "normalized_heatmap_figure",
    "normalized_score",
    "normalized_score_info",
    "plot_normalized_heatmap",
]
