"""Server-side HTML of the dashboards (Jinja2 templates in ``dashboards/templates``), from data already loaded.

Pages: the sweep list, a sweep (every figure, the paper-style table and the robustness metrics), a trial
(learning curves and details), a comparison of sweeps side by side, a not-found page, and the single-file
report. Figures are embedded as JSON and drawn in the browser by plotly.js, which is served from (or, in the
report, inlined out of) the installed ``plotly`` package: no page needs the internet.

A live page (a sweep or a trial that is still running) carries a small JSON block naming its update URL;
``dashboards.js`` polls it every few seconds and applies the answer (``sweep_update``/``trial_update``) with
``Plotly.react`` and by replacing fragments, without reloading, and stops once the sweep or trial finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from dashboards import data, figures
from dashboards.data import SweepListItem, SweepSnapshot
from nero_study.formatting import format_number

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The dashboards' own static files (served at ``/static/<name>``).
STATIC_FILES: tuple[str, ...] = ("dashboards.css", "dashboards.js")
PLOTLY_JS = "plotly.min.js"
DEFAULT_REFRESH_SECONDS = 3.0
MIN_REFRESH_SECONDS = 0.2
RECENT_TRIALS = 30
_SCRIPT_END = "</" + "script"


def plotly_js_path() -> Path:
    """plotly.min.js inside the installed ``plotly`` package (the version that built the figures)."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / PLOTLY_JS


def static_path(name: str) -> Path | None:
    """The file served at ``/static/<name>``: plotly.js from the plotly package or one of ours; else ``None``."""
    if name == PLOTLY_JS:
        return plotly_js_path()
    if name in STATIC_FILES:
        return STATIC_DIR / name
    return None


def plotly_version() -> str:
    import plotly

    return str(plotly.__version__)


# --- templates --------------------------------------------------------------------------------------


def _lr(value: Any) -> str:
    return format_number(value, "g")


def _percent(value: Any) -> str:
    """A fraction as a percentage (``0.125`` -> ``12.5%``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return format_number(value)
    return f"{100.0 * value:.1f}%"


def _when(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; ``—`` when missing (None, NaT)."""
    if value is None or value != value:  # NaT is not equal to itself
        return "—"
    if not isinstance(value, datetime):
        return str(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "—"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the dashboards' templates (HTML autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=format_number, lr=_lr, percent=_percent, when=_when, duration=_duration)
    env.globals.update(status_colors=data.STATUS_COLORS, status_order=data.STATUS_ORDER)
    return env


@dataclass(frozen=True)
class Assets:
    """How a page gets its CSS and scripts: links under ``root`` (served pages) or inlined (the report)."""

    root: str = ""
    inline: bool = False
    css: str = ""
    js: str = ""
    plotly_js: str = ""


def served_assets(root: str = "") -> Assets:
    """Assets for pages served by the app mounted at ``root`` (e.g. ``""`` or ``"/nero"``)."""
    return Assets(root=root.rstrip("/"))


def inline_assets() -> Assets:
    """Everything inlined (plotly.js included) for a single self-contained HTML file."""
    plotly_js = plotly_js_path().read_text(encoding="utf-8").replace(_SCRIPT_END, "<\\/script")
    return Assets(
        inline=True,
        css=(STATIC_DIR / "dashboards.css").read_text(encoding="utf-8"),
        js=(STATIC_DIR / "dashboards.js").read_text(encoding="utf-8").replace(_SCRIPT_END, "<\\/script"),
        plotly_js=plotly_js,
    )


def _render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


# --- figures of a sweep -----------------------------------------------------------------------------

#: The figures of the sweep page, in page order: (id, what it shows). Each is drawn into ``#figure-<id>``.
SWEEP_FIGURES: tuple[tuple[str, str], ...] = (
    ("lr-sensitivity", "Learning-rate sensitivity"),
    ("ootb-vs-tuned", "Out of the box vs tuned"),
    ("heatmap", "Normalised score"),
    ("profiles", "Performance profiles"),
    ("expected-best", "Expected best after k trials"),
    ("curves", "Learning curves at the best learning rate"),
    ("progress", "Progress"),
)


def sweep_figures(snapshot: SweepSnapshot) -> dict[str, dict[str, Any]]:
    """Every figure of the sweep page as Plotly JSON dicts, keyed by figure id."""
    labels = snapshot.labels
    colors = data.optimizer_colors(labels)
    analysis = snapshot.analysis
    note = f"Cannot analyse the trials: {snapshot.analysis_error}" if snapshot.analysis_error else ""
    lr_info = data.lr_sensitivity_info(snapshot.trials, analysis, labels=labels, colors=colors)
    built = {
        "lr-sensitivity": figures.plot_lr_sensitivity(lr_info._replace(note=note or lr_info.note)),
        "ootb-vs-tuned": figures.plot_ootb_vs_tuned(
            _noted(data.ootb_vs_tuned_info(analysis, labels=labels, colors=colors), note)
        ),
        "heatmap": figures.plot_normalized_heatmap(_noted(data.normalized_score_info(analysis, labels=labels), note)),
        "profiles": figures.plot_performance_profiles(
            _noted(data.performance_profile_info(analysis, labels=labels, colors=colors), note)
        ),
        "expected-best": figures.plot_expected_best(
            _noted(data.expected_best_info(analysis, labels=labels, colors=colors), note)
        ),
        "curves": figures.plot_learning_curves(
            data.learning_curves_info(list(snapshot.curves), colors=colors),
            title="Learning curves at each optimiser's best learning rate",
        ),
        "progress": figures.plot_sweep_progress(data.sweep_progress_info(snapshot.trials)),
    }
    return {key: figures.figure_to_dict(fig) for key, fig in built.items()}


def _noted(info: Any, note: str) -> Any:
    return info._replace(note=note) if note else info


def _tables_context(snapshot: SweepSnapshot) -> dict[str, Any]:
    labels = snapshot.labels
    colors = data.optimizer_colors(labels)
    return {
        "paper_tables": data.paper_tables(snapshot.analysis, labels=labels, colors=colors),
        "robustness": data.robustness_rows(snapshot.analysis, labels=labels, colors=colors),
        "scores": data.profile_score_rows(snapshot.analysis, labels=labels, colors=colors),
        "analysis_error": snapshot.analysis_error,
    }


def _recent_trials(snapshot: SweepSnapshot, limit: int = RECENT_TRIALS) -> list[dict[str, Any]]:
    """The trials that changed last (by finish, else start time), newest first, at most ``limit``."""
    import pandas as pd

    frame = snapshot.trials
    if frame is None or len(frame) == 0:
        return []
    last = pd.to_datetime(frame["finished_at"], utc=True).fillna(pd.to_datetime(frame["started_at"], utc=True))
    picked = frame.assign(_last=last).dropna(subset=["_last"]).sort_values(["_last", "id"], ascending=False)
    return [data.trial_record(row) for row in picked.head(limit).to_dict("records")]


def _sweep_context(snapshot: SweepSnapshot) -> dict[str, Any]:
    return {
        "sweep": snapshot,
        "progress": snapshot.progress,
        "recent_trials": _recent_trials(snapshot),
        "curve_trials": [trial for trial, _ in snapshot.curves],
        **_tables_context(snapshot),
    }


def _fragments(template: str, names: Sequence[str], **context: Any) -> dict[str, str]:
    module = environment().get_template(template).make_module(context)
    return {name: str(getattr(module, name.replace("-", "_"))()) for name in names}


SWEEP_FRAGMENTS: tuple[str, ...] = ("sweep-summary", "sweep-tables", "sweep-trials")


def sweep_update(snapshot: SweepSnapshot, *, root: str = "") -> dict[str, Any]:
    """What a live sweep page polls: version, status, every figure and the re-rendered fragments."""
    context = {**_sweep_context(snapshot), "assets": served_assets(root)}
    return {
        "changed": True,
        "version": snapshot.version,
        "status": snapshot.status,
        "finished": snapshot.finished,
        "counts": snapshot.counts,
        "figures": sweep_figures(snapshot),
        "fragments": _fragments("_sweep_fragments.html", SWEEP_FRAGMENTS, **context),
    }


def unchanged_update(version: str, *, status: str, finished: bool) -> dict[str, Any]:
    """The poll answer when nothing changed since ``version``."""
    return {"changed": False, "version": version, "status": status, "finished": finished}


def _live(url: str, version: str, finished: bool, refresh_seconds: float) -> dict[str, Any]:
    interval = max(MIN_REFRESH_SECONDS, float(refresh_seconds))
    return {"url": url, "version": version, "finished": finished, "interval_ms": int(interval * 1000)}


# --- pages ------------------------------------------------------------------------------------------


def render_sweeps_page(
    sweeps: Sequence[SweepListItem], *, total: int, offset: int = 0, limit: int = 50, root: str = ""
) -> str:
    """The list of sweeps, newest first, each with its status and a progress bar; paged by offset/limit."""
    return _render(
        "sweeps.html",
        assets=served_assets(root),
        sweeps=list(sweeps),
        total=total,
        offset=offset,
        limit=limit,
        figures=None,
        live=None,
    )


def render_sweep_page(
    snapshot: SweepSnapshot, *, root: str = "", refresh_seconds: float = DEFAULT_REFRESH_SECONDS
) -> str:
    """A sweep's page: progress, every figure, the paper-style table and the robustness metrics.

    While the sweep has not finished the page polls ``/sweeps/<id>/figures.json`` every ``refresh_seconds``.
    """
    assets = served_assets(root)
    live = None
    if not snapshot.finished:
        url = f"{assets.root}/sweeps/{snapshot.id}/figures.json"
        live = _live(url, snapshot.version, snapshot.finished, refresh_seconds)
    return _render(
        "sweep.html",
        assets=assets,
        figures=sweep_figures(snapshot),
        live=live,
        report=False,
        generated_at=None,
        **_sweep_context(snapshot),
    )


def render_report(snapshot: SweepSnapshot, *, generated_at: datetime | None = None) -> str:
    """The single-file report of a sweep: the sweep page's figures and tables with everything inlined."""
    return _render(
        "sweep.html",
        assets=inline_assets(),
        figures=sweep_figures(snapshot),
        live=None,
        report=True,
        generated_at=generated_at or datetime.now(UTC),
        **_sweep_context(snapshot),
    )


def trial_figures(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The trial page's figure (metric and training loss against step), keyed by figure id."""
    info = data.learning_curves_info([(trial, curve)])
    title = f"Learning curve of trial {trial.get('id')}"
    return {"curve": figures.figure_to_dict(figures.plot_learning_curves(info, title=title))}


TRIAL_FRAGMENTS: tuple[str, ...] = ("trial-details",)


def _trial_context(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]], sweep_name: str | None) -> dict:
    return {"trial": dict(trial), "points": len(curve), "sweep_name": sweep_name}


def trial_update(
    trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]], *, sweep_name: str | None = None, root: str = ""
) -> dict[str, Any]:
    """What a live trial page polls: version, status, the curve figure and the details fragment."""
    finished = trial.get("status") in data.TRIAL_DONE
    context = {**_trial_context(trial, curve, sweep_name), "assets": served_assets(root)}
    return {
        "changed": True,
        "version": data.trial_version(trial, curve),
        "status": trial.get("status"),
        "finished": finished,
        "figures": trial_figures(trial, curve),
        "fragments": _fragments("_trial_fragments.html", TRIAL_FRAGMENTS, **context),
    }


def render_trial_page(
    trial: Mapping[str, Any],
    curve: Sequence[Mapping[str, Any]],
    *,
    sweep_name: str | None = None,
    root: str = "",
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
) -> str:
    """A trial's page: its learning curves and its settings and outcome (live while it runs)."""
    assets = served_assets(root)
    finished = trial.get("status") in data.TRIAL_DONE
    live = None
    if not finished:
        url = f"{assets.root}/trials/{trial.get('id')}/figures.json"
        live = _live(url, data.trial_version(trial, curve), finished, refresh_seconds)
    return _render(
        "trial.html",
        assets=assets,
        figures=trial_figures(trial, curve),
        live=live,
        **_trial_context(trial, curve, sweep_name),
    )


def compare_figures(snapshots: Sequence[SweepSnapshot]) -> dict[str, dict[str, Any]]:
    """The lr-sensitivity figure of each sweep (``lr-sensitivity-<index>``), in colours shared by all of them."""
    labels: list[str] = []
    for snapshot in snapshots:
        labels.extend(label for label in snapshot.labels if label not in labels)
    colors = data.optimizer_colors(labels)
    result = {}
    for index, snapshot in enumerate(snapshots):
        info = data.lr_sensitivity_info(snapshot.trials, snapshot.analysis, labels=labels, colors=colors)
        if snapshot.analysis_error:
            info = info._replace(note=f"Cannot analyse the trials: {snapshot.analysis_error}")
        fig = figures.plot_lr_sensitivity(info, title=f"Learning-rate sensitivity: {snapshot.name}")
        result[f"lr-sensitivity-{index}"] = figures.figure_to_dict(fig)
    return result


def render_compare_page(snapshots: Sequence[SweepSnapshot], *, root: str = "") -> str:
    """Sweeps side by side (e.g. the paper's presets against the libraries'): their lr-sensitivity figures,
    paper-style tables and robustness metrics."""
    columns = []
    for index, snapshot in enumerate(snapshots):
        columns.append(
            {
                "sweep": snapshot,
                "progress": snapshot.progress,
                "figure_id": f"lr-sensitivity-{index}",
                **_tables_context(snapshot),
            }
        )
    return _render(
        "compare.html", assets=served_assets(root), columns=columns, figures=compare_figures(snapshots), live=None
    )


def render_not_found(message: str, *, title: str = "Not found", root: str = "") -> str:
    """The 404 (or other error) page: what went wrong, and a link back to the sweep list."""
    return _render("not_found.html", assets=served_assets(root), title=title, message=message, figures=None, live=None)


__all__ = [
    "Assets",
    "DEFAULT_REFRESH_SECONDS",
    "PLOTLY_JS",
    "STATIC_FILES",
    "SWEEP_FIGURES",
    "compare_figures",
    "environment",
    "inline_assets",
    "plotly_js_path",
    "plotly_version",
    "render_compare_page",
    "render_not_found",
    "render_report",
    "render_sweep_page",
    "render_sweeps_page",
    "render_trial_page",
    "served_assets",
    "static_path",
    "sweep_figures",
    "sweep_update",
    "trial_figures",
    "trial_update",
    "unchanged_update",
]
