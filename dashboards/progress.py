"""A sweep's progress: trials by status over time (:func:`sweep_progress_info`, :func:`plot_sweep_progress`), and
the progress bar of the sweep list and pages (:func:`progress_bar`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboards import drawing
from dashboards.common import MAX_CURVE_POINTS, STATUS_COLORS, STATUS_ORDER
from nero_study.vocabulary import TRIAL_ENDED, TRIAL_FINISHED


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


def sweep_progress_info(trials: pd.DataFrame | None, *, max_points: int = MAX_CURVE_POINTS) -> ProgressInfo:
    """Trials by status over time, at most ``max_points`` times (every event when there are fewer).

    At time t a trial is: its final status once finished (``finished_at <= t``), ``running`` once started,
    else ``pending`` once created. A trial with a finish time but no end status (re-queued) ended cancelled.
    Times come from the trials' stored timestamps (UTC).
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
    final = np.where(np.isin(status, TRIAL_ENDED), status, "cancelled")

    def at_or_before(times: np.ndarray) -> np.ndarray:
        """For each event t, how many of ``times`` are <= t (a NaN time never is)."""
        return np.searchsorted(np.sort(times[np.isfinite(times)]), events, side="right")

    # At t: done = finished <= t; running = started <= t and not done; pending = created <= t and neither.
    # Counted by sorting each time once: "started and finished by t" is max(started, finished) <= t, and
    # "created and (started or finished) by t" is max(created, min(started, finished)) <= t (NaN: never).
    counts: dict[str, list[int]] = {s: [] for s in STATUS_ORDER}
    for name in TRIAL_ENDED:
        counts[name] = at_or_before(np.where(final == name, finished, np.nan)).tolist()
    started_done = at_or_before(np.maximum(started, finished))
    counts["running"] = (at_or_before(started) - started_done).tolist()
    moved_on = at_or_before(np.maximum(created, np.fmin(started, finished)))
    counts["pending"] = (at_or_before(created) - moved_on).tolist()
    times = tuple(pd.to_datetime(events, unit="s", utc=True).to_pydatetime())
    return ProgressInfo(
        times=times, counts={k: tuple(int(n) for n in v) for k, v in counts.items()}, total=len(trials)
    )


def _progress_traces(info: ProgressInfo) -> list[drawing.PanelTrace]:
    times = [time.isoformat() for time in info.times]
    traces: list[drawing.PanelTrace] = []
    for status in STATUS_ORDER:
        values = info.counts.get(status, ())
        if not any(values):
            continue
        props = {
            "x": times,
            "y": list(values),
            "mode": "lines",
            "name": status,
            "stackgroup": "trials",
            "line": {"shape": "hv", "width": 0.5, "color": STATUS_COLORS[status]},
            "fillcolor": drawing.rgba(STATUS_COLORS[status], 0.75),
            "hovertemplate": f"{status}: %{{y}}<extra></extra>",
        }
        traces.append(("scatter", props, None, None))
    return traces


def _progress_layout(total: int, title: str) -> tuple[go.Figure, int]:
    fig = drawing.new_figure()
    fig.update_xaxes(title_text="time (UTC)")
    fig.update_yaxes(title_text=_y_title(total), rangemode="tozero")
    return drawing.finish_layout(fig, title=title, height=drawing.PANEL_HEIGHT + 40), 1


def plot_sweep_progress(info: ProgressInfo, *, title: str = "Trials by status over time") -> go.Figure:
    """A stacked area of the number of trials in each status against wall-clock time (UTC)."""
    if not info.times:
        return drawing.empty_figure(info.note or "No trials yet", title=title)
    fig, _ = _progress_layout(info.total, title)
    return drawing.draw_panel_traces(fig, _progress_traces(info))


def sweep_progress_figure(
    info: ProgressInfo, *, title: str = "Trials by status over time", user_text: Iterable[str] = ()
) -> dict[str, Any]:
    """``figure_to_dict(plot_sweep_progress(...))`` without Plotly objects for the traces, the layout kept by
    its arguments (:func:`~dashboards.drawing.panel_figure_json`): what the sweep page draws."""
    if not info.times:
        return drawing.figure_to_dict(plot_sweep_progress(info, title=title), user_text=user_text)
    # The layout is kept by title alone and the y axis's title (the only place the total shows) written in: a
    # sweep whose trial count grows is not laid out again for each new trial.
    figure = drawing.panel_figure_json(
        (title,), lambda: _progress_layout(0, title), _progress_traces(info), user_text=user_text
    )
    figure["layout"]["yaxis"]["title"]["text"] = _y_title(info.total)
    return figure


def _y_title(total: int) -> str:
    return f"trials (of {total})"


class ProgressSegment(NamedTuple):
    status: str
    count: int
    percent: float  # of the bar's total, 0..100


class ProgressBar(NamedTuple):
    """A sweep's progress: trials with a result out of the planned (or stored) total, by status."""

    total: int
    done: int  # succeeded + diverged + failed
    percent_done: float  # 0..100
    segments: tuple[ProgressSegment, ...]  # one per non-empty status but pending, in STATUS_ORDER


def progress_bar(counts: Mapping[str, int], planned: int | None = None) -> ProgressBar:
    """The progress bar of a sweep: one segment per non-empty status, over max(planned, stored trials)."""
    stored = sum(int(v) for v in counts.values())
    total = max(int(planned or 0), stored)
    done = sum(int(counts.get(s, 0)) for s in TRIAL_FINISHED)
    segments = tuple(
        ProgressSegment(
            status=status,
            count=int(counts.get(status, 0)),
            percent=100.0 * int(counts.get(status, 0)) / total if total else 0.0,
        )
        for status in STATUS_ORDER
        if status != "pending" and counts.get(status, 0)
    )
    return ProgressBar(total=total, done=done, percent_done=100.0 * done / total if total else 0.0, segments=segments)


__all__ = [
    "ProgressBar",
    "ProgressInfo",
    "ProgressSegment",
    "plot_sweep_progress",
    "progress_bar",
    "sweep_progress_figure",
    "sweep_progress_info",
]
