"""Performance profiles over tasks (AlgoPerf style, as computed by the analysis): rho(tau) per optimiser, out of
the box and tuned, with each profile's score.

:func:`performance_profile_info` keeps only the taus where rho changes (a step curve);
:func:`plot_performance_profiles` draws both profiles side by side with the scores in the legend.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import color_of, label_order, optimizer_colors
from nero_study.formatting import format_number
from nero_study.json_safe import finite_or_none
from nero_study.study.analysis import SweepAnalysis


class ProfileCurve(NamedTuple):
    """rho(tau) of one optimiser: the fraction of tasks it solves within a factor tau of the best."""

    label: str
    taus: tuple[float, ...]
    rho: tuple[float, ...]
    score: float | None  # mean of rho over tau in [1, tau_max]


class ProfilesInfo(NamedTuple):
    ootb: tuple[ProfileCurve, ...]
    tuned: tuple[ProfileCurve, ...]
    tau_max: float
    tasks: int
    note: str = ""


def step_points(taus: Sequence[float], rho: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Only the taus where rho changes (plus both ends): a step curve drawn with ``line_shape='hv'``."""
    keep = [i for i in range(len(taus)) if i in (0, len(taus) - 1) or rho[i] != rho[i - 1]]
    return tuple(float(taus[i]) for i in keep), tuple(float(rho[i]) for i in keep)


def performance_profile_info(analysis: SweepAnalysis, *, labels: Sequence[str] | None = None) -> ProfilesInfo:
    """The out-of-the-box and tuned performance profiles with their scores."""
    tuned = analysis.profiles.get("tuned")
    if not analysis.per_optimizer or tuned is None:
        return ProfilesInfo(ootb=(), tuned=(), tau_max=4.0, tasks=0, note="No finished trials yet")
    order = label_order(analysis, labels)
    curves: dict[str, tuple[ProfileCurve, ...]] = {}
    for kind in ("ootb", "tuned"):
        profile = analysis.profiles[kind]
        items = []
        for label in order:
            if label not in profile.rho:
                continue
            taus, rho = step_points(profile.taus, profile.rho[label])
            items.append(ProfileCurve(label=label, taus=taus, rho=rho, score=finite_or_none(profile.scores.get(label))))
        curves[kind] = tuple(items)
    return ProfilesInfo(ootb=curves["ootb"], tuned=curves["tuned"], tau_max=tuned.tau_max, tasks=len(tuned.tasks))


def _scores(info: ProfilesInfo) -> dict[str, list[float | None]]:
    scores: dict[str, list[float | None]] = {curve.label: [None, None] for curve in info.tuned}
    for curve in info.ootb:
        scores.setdefault(curve.label, [None, None])[0] = curve.score
    for curve in info.tuned:
        scores[curve.label][1] = curve.score
    return scores


def _traces(info: ProfilesInfo, colors: Mapping[str, str]) -> list[drawing.PanelTrace]:
    scores = _scores(info)
    traces: list[drawing.PanelTrace] = []
    shown: set[str] = set()
    for col, curves, kind in ((1, info.ootb, "out of the box"), (2, info.tuned, "tuned")):
        for curve in curves:
            ootb_score, tuned_score = (format_number(score, ".2f") for score in scores[curve.label])
            props = {
                "x": list(curve.taus),
                "y": list(curve.rho),
                "mode": "lines",
                "line": {"shape": "hv", "color": color_of(colors, curve.label), "width": 2.5},
                "name": f"{curve.label}: score {ootb_score} ootb, {tuned_score} tuned",
                "legendgroup": curve.label,
                "showlegend": curve.label not in shown,
                "hovertemplate": f"{curve.label} ({kind}): %{{y:.0%}} of tasks within %{{x:.2f}}x<extra></extra>",
            }
            traces.append(("scatter", props, 1, col))
            shown.add(curve.label)
    return traces


def _layout(tau_max: float, tasks: int, entries: int, title: str) -> tuple[go.Figure, int]:
    fig = drawing.ootb_and_tuned_panels()
    for col in (1, 2):
        fig.update_xaxes(title_text="tau (ratio to the best)", range=[1.0, tau_max], row=1, col=col)
    fig.update_yaxes(title_text=f"fraction of {tasks} task(s) within tau", range=[-0.03, 1.05], row=1, col=1)
    fig.update_yaxes(range=[-0.03, 1.05], row=1, col=2)
    height = drawing.PANEL_HEIGHT + 90
    return drawing.finish_layout(fig, title=title, height=height, legend_rows=drawing.legend_rows(entries, 2)), 2


def _colors(info: ProfilesInfo, colors: Mapping[str, str] | None) -> dict[str, str]:
    return dict(colors or optimizer_colors(curve.label for curve in (*info.ootb, *info.tuned)))


def plot_performance_profiles(
    info: ProfilesInfo, *, colors: Mapping[str, str] | None = None, title: str = "Performance profiles over tasks"
) -> go.Figure:
    """rho(tau) per optimiser at the default lr and at the tuned lr; the legend gives both profile scores."""
    if not info.tuned:
        return drawing.empty_figure(info.note or "No finished trials yet", title=title)
    fig, _ = _layout(info.tau_max, info.tasks, len(_scores(info)), title)
    return drawing.draw_panel_traces(fig, _traces(info, _colors(info, colors)))


def performance_profiles_figure(
    info: ProfilesInfo, *, colors: Mapping[str, str] | None = None, title: str = "Performance profiles over tasks",
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(plot_performance_profiles(...))`` without Plotly objects for the traces, the layout kept
    by its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws."""
    if not info.tuned:
        return drawing.figure_to_dict(plot_performance_profiles(info, colors=colors, title=title), user_text=user_text)
    arguments = (info.tau_max, info.tasks, len(_scores(info)), title)
    return drawing.panel_figure_json(
        arguments, lambda: _layout(*arguments), _traces(info, _colors(info, colors)), user_text=user_text
    )


__all__ = [
    "ProfileCurve",
    "ProfilesInfo",
    "performance_profile_info",
    "performance_profiles_figure",
    "plot_performance_profiles",
    "step_points",
]
