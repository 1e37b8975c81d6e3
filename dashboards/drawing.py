"""The Plotly side every ``plot_*`` function shares: the light template, the layout (title, bottom legend), grids
of panels, log-axis ticks, the symbols of the marks, the empty figure with a note, and the JSON for plotly.js.

Habits shared by all figures: learning rates on a log x axis; one legend group per optimiser label (clicking
an optimiser in the legend hides all of its traces) in its fixed colour; marks: open diamond = default lr,
star = best lr, x = diverged or failed (at the top of the finite data range, so nothing is dropped and the
axis is not stretched).
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from nero_study.formatting import format_number

DEFAULT_LR_SYMBOL = "diamond-open"
BEST_LR_SYMBOL = "star"
DIVERGED_SYMBOL = "x"
MARKS_GROUP = "marks"  # legend group of the key to the marks (not an optimiser)
PANEL_HEIGHT = 300  # pixels per row of panels
MAX_COLUMNS = 3
#: Colour of legend keys that stand for no optimiser (the marks, the ootb/tuned bar styles).
KEY_COLOR = "#555555"
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


def new_figure() -> go.Figure:
    """An empty figure with the light template (never plotly's default, which is slow to apply)."""
    return go.Figure(layout={"template": TEMPLATE})


def rgba(color: str, alpha: float) -> str:
    """``#rrggbb`` as ``rgba(r, g, b, alpha)`` (for translucent seed bands and stacked areas)."""
    value = color.lstrip("#")
    if len(value) != 6:
        return color
    red, green, blue = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def finish_layout(fig: go.Figure, *, title: str, height: int, legend_rows: int = 1) -> go.Figure:
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
    fig = new_figure()
    fig.add_annotation(
        text=note or "No data", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return finish_layout(fig, title=title, height=220, legend_rows=0)


def legend_rows(items: int, per_row: int) -> int:
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
    return {"tickmode": "array", "tickvals": ticks, "ticktext": [format_number(t, "g") for t in ticks]}


def metric_axis(log: bool, values: Iterable[float | None]) -> dict[str, Any]:
    """Keyword arguments of ``update_yaxes`` for a metric axis: log (with labelled ticks) or linear."""
    return {"type": "log", **log_ticks(values)} if log else {"type": "linear"}


def cell(index: int, columns: int) -> tuple[int, int]:
    """The (row, column) of the ``index``-th panel in a grid ``columns`` wide, both from 1."""
    return index // columns + 1, index % columns + 1


def panel_grid(titles: Sequence[str], max_columns: int = MAX_COLUMNS) -> tuple[go.Figure, int, int]:
    """A figure with one panel per title, at most ``max_columns`` a row; returns it, its rows and columns."""
    columns = max(1, min(len(titles), max_columns))
    rows = math.ceil(len(titles) / columns)
    fig = make_subplots(
        figure=new_figure(),
        rows=rows,
        cols=columns,
        subplot_titles=list(titles),
        horizontal_spacing=0.08 if columns > 1 else 0.02,
        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1,
    )
    for index in range(len(titles), rows * columns):  # unused cells of the last row
        row, col = cell(index, columns)
        fig.update_xaxes(visible=False, row=row, col=col)
        fig.update_yaxes(visible=False, row=row, col=col)
    return fig, rows, columns


def ootb_and_tuned_panels(**options: Any) -> go.Figure:
    """Two panels side by side: out of the box (default lr) on the left, tuned (best lr) on the right."""
    return make_subplots(
        figure=new_figure(),
        rows=1,
        cols=2,
        subplot_titles=["out of the box (default lr)", "tuned (best lr)"],
        shared_yaxes=True,
        **options,
    )


def metric_title(metric_name: str, lower_is_better: bool) -> str:
    """The title of a metric axis, with its orientation."""
    name = metric_name or "metric"
    return f"{name} ({'lower' if lower_is_better else 'higher'} is better)"


def mark_key_traces() -> list[dict[str, Any]]:
    """The ``go.Scatter`` arguments of the legend entries that explain the marks (drawn nowhere: no points)."""
    return [
        {
            "x": [None],
            "y": [None],
            "mode": "markers",
            "name": name,
            "legendgroup": MARKS_GROUP,
            "marker": {"symbol": symbol, "size": size, "color": KEY_COLOR, "line": {"width": 2}},
            "hoverinfo": "skip",
        }
        for name, symbol, size in (
            ("default lr", DEFAULT_LR_SYMBOL, 11),
            ("best lr", BEST_LR_SYMBOL, 13),
            ("diverged / failed", DIVERGED_SYMBOL, 10),
        )
    ]


def add_mark_key(fig: go.Figure, *, row: int = 1, col: int = 1) -> None:
    """Legend entries that explain the marks (drawn nowhere: no points)."""
    for kwargs in mark_key_traces():
        fig.add_trace(go.Scatter(**kwargs), row=row, col=col)


def plain_text(text: str) -> str:
    """``text`` shown as written by Plotly: ``<`` and ``>`` as entities, so a label such as ``<a href=..>`` or
    ``<b>`` is not rendered as a link or bold (Plotly renders a subset of HTML in legends and titles)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def figure_to_dict(fig: go.Figure, *, user_text: Iterable[str] = ()) -> dict[str, Any]:
    """The figure as plain JSON-safe dicts (``data``, ``layout``) for Plotly.js; NaN and inf become null.

    Users' strings are shown as text wherever they land: trace names (the legend entries) are written as plain text
    (:func:`plain_text`), and everywhere else (titles, axis titles and category ticks, hover templates and texts,
    annotations, custom data) each of ``user_text`` (labels, task and metric names, sweep names) that could carry
    Plotly markup (``<`` or ``&``) is replaced by its plain-text form, while the figure's own markup (``<br>``,
    ``<extra>``) stays markup.
    """
    figure = json.loads(pio.to_json(fig, validate=False, remove_uids=True))
    for trace in figure.get("data", []):
        if isinstance(trace.get("name"), str):
            trace["name"] = plain_text(trace["name"])
    return _users_text_as_text(figure, user_text)


def _users_text_as_text(figure: dict[str, Any], user_text: Iterable[str]) -> dict[str, Any]:
    """``figure`` (names already plain text) with each of ``user_text`` that could carry markup shown as text."""
    risky = sorted({text for text in user_text if "<" in text or "&" in text}, key=len, reverse=True)
    if not risky:
        return figure
    pattern = re.compile("|".join(re.escape(text) for text in risky))

    def shown_as_text(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(lambda match: plain_text(match.group(0)), value)
        if isinstance(value, list):
            return [shown_as_text(item) for item in value]
        if isinstance(value, dict):
            return {key: shown_as_text(item) for key, item in value.items()}
        return value

    return {
        # A trace's name is already plain text as a whole.
        "data": [{k: v if k == "name" else shown_as_text(v) for k, v in trace.items()} for trace in figure["data"]],
        **{key: shown_as_text(value) for key, value in figure.items() if key != "data"},
    }


def _plotly_json(value: Any) -> Any:
    """``value`` as Plotly's JSON writes a property of a trace: dicts with their keys in order (Plotly's
    generated classes hold their properties alphabetically), tuples as lists, NaN and inf as null."""
    if isinstance(value, Mapping):
        return {key: _plotly_json(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_plotly_json(item) for item in value]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return value


def scatter_json(
    props: Mapping[str, Any], *, row: int | None, col: int | None, columns: int, kind: str = "scatter"
) -> dict[str, Any]:
    """What :func:`figure_to_dict` writes for ``go.Scatter(**props)`` (``kind`` "bar": ``go.Bar``) added at
    (``row``, ``col``) of a grid of panels ``columns`` wide (:func:`panel_grid`), without building Plotly
    objects: about 100x quicker a trace. ``props`` hold plain Python values (str, bool, int, float, None,
    lists, dicts)."""
    trace = _plotly_json(props)
    trace["type"] = kind
    if row is not None and col is not None:  # added to a panel (else to a figure without a grid: no axis keys)
        index = (row - 1) * columns + col
        trace["xaxis"], trace["yaxis"] = ("x", "y") if index == 1 else (f"x{index}", f"y{index}")
    if isinstance(trace.get("name"), str):
        trace["name"] = plain_text(trace["name"])
    return trace


#: Plotly's trace classes by the ``kind`` of :func:`scatter_json`.
TRACE_CLASSES: dict[str, Any] = {"scatter": go.Scatter, "bar": go.Bar, "heatmap": go.Heatmap}
#: Layout JSON of panel figures by their pickled arguments (:func:`panel_figure_json`); dropped when full.
_LAYOUTS: dict[bytes, tuple[dict[str, Any], int]] = {}
_MAX_LAYOUTS = 32

#: A trace of a panel figure: its kind (a key of TRACE_CLASSES), its ``go.<Kind>`` arguments, its row and column
#: (both ``None`` in a figure without a grid of panels).
PanelTrace = tuple[str, dict[str, Any], int | None, int | None]


def draw_panel_traces(fig: go.Figure, traces: Iterable[PanelTrace]) -> go.Figure:
    """``fig`` with each trace added (as Plotly objects) in order."""
    for kind, props, row, col in traces:
        if row is None:
            fig.add_trace(TRACE_CLASSES[kind](**props))
        else:
            fig.add_trace(TRACE_CLASSES[kind](**props), row=row, col=col)
    return fig


def panel_figure_json(
    layout_arguments: Any,
    make_layout: Callable[[], tuple[go.Figure, int]],
    traces: Iterable[PanelTrace],
    *,
    user_text: Iterable[str] = (),
) -> dict[str, Any]:
    """``figure_to_dict(draw_panel_traces(fig, traces), user_text=user_text)`` where ``fig, columns =
    make_layout()`` lays out a grid of panels with no trace, without Plotly objects for the traces
    (:func:`scatter_json`); the layout's JSON is kept by ``layout_arguments`` (pickled: whatever ``make_layout``
    depends on), so a figure whose axes did not move is not laid out again."""
    key = pickle.dumps(layout_arguments, protocol=pickle.HIGHEST_PROTOCOL)
    kept = _LAYOUTS.get(key)
    if kept is None:
        fig, columns = make_layout()
        kept = figure_to_dict(fig)["layout"], columns
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = kept
    layout, columns = kept
    data = [scatter_json(props, row=row, col=col, columns=columns, kind=kind) for kind, props, row, col in traces]
    return _users_text_as_text({"data": data, "layout": copy.deepcopy(layout)}, user_text)


__all__ = [
    "BEST_LR_SYMBOL",
    "DEFAULT_LR_SYMBOL",
    "DIVERGED_SYMBOL",
    "KEY_COLOR",
    "MARKS_GROUP",
    "PANEL_HEIGHT",
    "TEMPLATE",
    "PanelTrace",
    "TRACE_CLASSES",
    "add_mark_key",
    "draw_panel_traces",
    "panel_figure_json",
    "mark_key_traces",
    "scatter_json",
    "cell",
    "empty_figure",
    "figure_to_dict",
    "plain_text",
    "finish_layout",
    "legend_rows",
    "log_ticks",
    "metric_axis",
    "metric_title",
    "new_figure",
    "ootb_and_tuned_panels",
    "panel_grid",
    "rgba",
]
