"""Server-side HTML of the dashboards (Jinja2 templates in ``dashboards/templates``), from data already loaded.

Pages: the sweep list (with the findings' headline), a sweep (every figure, the paper-style table and the
robustness metrics), a trial (learning curves and details), a comparison of sweeps side by side, the findings
across sweeps, a not-found page, and the single-file report. Figures are embedded as JSON and drawn in the
browser by plotly.js, which is served from (or, in the report, inlined out of) the installed ``plotly``
package: no page needs the internet.

A live page (a sweep or a trial that is still running) carries a small JSON block naming its update URL;
``dashboards.js`` polls it every few seconds and applies the answer (``sweep_update``/``trial_update``) with
``Plotly.react`` and by replacing fragments, without reloading, and stops once the sweep or trial finished.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from dashboards.common import optimizer_colors
from dashboards.drawing import figure_to_dict
from dashboards.expected_best import expected_best_figure, expected_best_info
from dashboards.learning_curves import learning_curves_info, plot_learning_curves
from dashboards.lr_sensitivity import lr_sensitivity_figure, lr_sensitivity_info, plot_lr_sensitivity
from dashboards.normalized_score import normalized_heatmap_figure, normalized_score_info
from dashboards.ootb_vs_tuned import ootb_vs_tuned_figure, ootb_vs_tuned_info
from dashboards.performance_profiles import performance_profile_info, performance_profiles_figure
from dashboards.progress import sweep_progress_figure, sweep_progress_info
from dashboards.snapshot import SweepListItem, SweepSnapshot, trial_record, trial_version
from dashboards.tables import paper_tables, profile_score_rows, robustness_rows
from dashboards.templating import inline_assets, render, render_fragments, served_assets
from nero_study.study.bracket import stored_bracket_summaries
from nero_study.study.findings import Findings
from nero_study.study.plan import auto_execution_by_task
from nero_study.study.spec import SweepSpec
from nero_study.study.verdict import EDGE_ADVICE, sweep_verdict
from nero_study.tasks.registry import task_caveats
from nero_study.vocabulary import BUDGETS, PRESETS, TRIAL_ENDED

DEFAULT_REFRESH_SECONDS = 3.0
MIN_REFRESH_SECONDS = 0.2
RECENT_TRIALS = 30


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


def _analysis_note(snapshot: SweepSnapshot) -> str:
    """What a figure says instead of drawing when the trials could not be analysed ("" when they could)."""
    return f"Cannot analyse the trials: {snapshot.analysis_error}" if snapshot.analysis_error else ""


def _noted(info: Any, note: str) -> Any:
    return info._replace(note=note) if note else info


#: The figures drawn from the learning curves alone (the others come from the trials and their analysis).
CURVE_FIGURES: tuple[str, ...] = ("curves",)


class SweepFigures(dict):
    """The figures of a sweep page keyed by figure id (Plotly JSON dicts), with what each was drawn from
    (``inputs``: the pickled arguments of its ``plot_*`` call), so that a later version redraws only the figures
    whose arguments changed."""

    def __init__(self, figures: Mapping[str, dict[str, Any]], inputs: Mapping[str, bytes]) -> None:
        super().__init__(figures)
        self.inputs = dict(inputs)


def _figure_calls(snapshot: SweepSnapshot, only: Collection[str] | None) -> dict[str, tuple[Callable, tuple, dict]]:
    """Per figure id (those in ``only``, or all): its ``plot_*`` function and the arguments to draw it with."""
    labels = snapshot.labels
    colors = optimizer_colors(labels)
    analysis = snapshot.analysis
    note = _analysis_note(snapshot)
    infos: dict[str, Callable[[], tuple[Callable, tuple, dict]]] = {
        "lr-sensitivity": lambda: (
            lr_sensitivity_figure,
            (_noted(lr_sensitivity_info(snapshot.trials, analysis, labels=labels), note),),
            {"colors": colors},
        ),
        "ootb-vs-tuned": lambda: (
            ootb_vs_tuned_figure, (_noted(ootb_vs_tuned_info(analysis, labels=labels), note),), {"colors": colors}
        ),
        "heatmap": lambda: (
            normalized_heatmap_figure, (_noted(normalized_score_info(analysis, labels=labels), note),), {}
        ),
        "profiles": lambda: (
            performance_profiles_figure,
            (_noted(performance_profile_info(analysis, labels=labels), note),),
            {"colors": colors},
        ),
        "expected-best": lambda: (
            expected_best_figure, (_noted(expected_best_info(analysis, labels=labels), note),), {"colors": colors}
        ),
        "curves": lambda: (
            plot_learning_curves,
            (learning_curves_info(list(snapshot.curves)),),
            {"colors": colors, "title": "Learning curves at each optimiser's best learning rate"},
        ),
        "progress": lambda: (sweep_progress_figure, (sweep_progress_info(snapshot.trials),), {}),
    }
    return {key: call() for key, call in infos.items() if only is None or key in only}


#: Trial columns whose values come from users (a spec, or an imported results file) and appear in figures.
_USER_COLUMNS = ("label", "task", "optimizer", "metric_name")


def user_text(snapshot: SweepSnapshot) -> set[str]:
    """Every user-provided string a sweep's figures may show: labels, task, optimiser and metric names, its name."""
    text = {snapshot.name, *snapshot.labels}
    for column in _USER_COLUMNS:
        if column in snapshot.trials:
            text.update(value for value in snapshot.trials[column].dropna().unique() if isinstance(value, str))
    return text


def _draw(
    calls: Mapping[str, tuple[Callable, tuple, dict]], text: Collection[str], reuse: SweepFigures | None = None
) -> SweepFigures:
    """Each figure of ``calls`` drawn (users' ``text`` shown as text: :func:`~dashboards.drawing.figure_to_dict`),
    or taken from ``reuse`` when it was drawn from the same arguments and the same users' text."""
    figures, inputs = {}, {}
    shown = sorted(text)
    for key, (plot, args, kwargs) in calls.items():
        inputs[key] = pickle.dumps((args, kwargs, shown), protocol=pickle.HIGHEST_PROTOCOL)
        if reuse is not None and key in reuse and reuse.inputs.get(key) == inputs[key]:
            figures[key] = reuse[key]
        elif plot in _JSON_BUILDERS:
            figures[key] = plot(*args, **kwargs, user_text=shown)
        else:
            figures[key] = figure_to_dict(plot(*args, **kwargs), user_text=shown)
    return SweepFigures(figures, inputs)


#: The page's figures written as JSON without Plotly objects for their traces (each equal to
#: ``figure_to_dict(plot_*(...))``: tests/dashboards/test_figure_json.py).
_JSON_BUILDERS = (
    lr_sensitivity_figure,
    ootb_vs_tuned_figure,
    normalized_heatmap_figure,
    performance_profiles_figure,
    expected_best_figure,
    sweep_progress_figure,
)


def sweep_figures(snapshot: SweepSnapshot, *, only: Collection[str] | None = None) -> SweepFigures:
    """Every figure of the sweep page (or those named in ``only``) as Plotly JSON dicts, keyed by figure id."""
    return _draw(_figure_calls(snapshot, only), user_text(snapshot))


def updated_sweep_figures(
    snapshot: SweepSnapshot, previous: tuple[SweepSnapshot, dict[str, dict[str, Any]]] | None
) -> dict[str, dict[str, Any]]:
    """:func:`sweep_figures` of ``snapshot``, taking over from a ``previous`` snapshot (and its figures) every
    figure whose ``plot_*`` arguments are the same (pickled, so equal to the last bit): after a new curve point
    (the same trials and analysis) only the learning curves are looked at again; after a new result, the
    figures it does not change (say the heatmap when no best or default-lr metric moved) are not redrawn."""
    if previous is None:
        return sweep_figures(snapshot)
    before, figures = previous
    if not isinstance(figures, SweepFigures):
        return sweep_figures(snapshot)
    same_trials = before.trials is snapshot.trials and before.analysis is snapshot.analysis
    if same_trials and before.labels == snapshot.labels:
        curves = _draw(_figure_calls(snapshot, CURVE_FIGURES), user_text(snapshot), figures)
        return SweepFigures({**figures, **curves}, {**figures.inputs, **curves.inputs})
    return _draw(_figure_calls(snapshot, None), user_text(snapshot), figures)


def _tables_context(snapshot: SweepSnapshot) -> dict[str, Any]:
    labels = snapshot.labels
    return {
        "paper_tables": paper_tables(snapshot.analysis, labels=labels),
        "robustness": robustness_rows(snapshot.analysis, labels=labels),
        "scores": profile_score_rows(snapshot.analysis, labels=labels),
        "colors": optimizer_colors(labels),
        "analysis_error": snapshot.analysis_error,
        "failed_trials": snapshot.analysis.failed_trials,
    }


def _recent_trials(snapshot: SweepSnapshot, limit: int = RECENT_TRIALS) -> list[dict[str, Any]]:
    """The trials that changed last (by finish, else start time), newest first, at most ``limit``."""
    frame = snapshot.trials
    if frame is None or len(frame) == 0:
        return []
    last = pd.to_datetime(frame["finished_at"], utc=True).fillna(pd.to_datetime(frame["started_at"], utc=True))
    picked = frame.assign(_last=last).dropna(subset=["_last"]).sort_values(["_last", "id"], ascending=False)
    return [trial_record(row) for row in picked.head(limit).to_dict("records")]


def _auto_execution(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(task, mode, why) of what ``execution: auto`` runs, for an auto sweep's page; empty for other sweeps and
    for a stored spec that no longer validates."""
    if spec.get("execution", "auto") != "auto":
        return []
    try:
        choices = auto_execution_by_task(SweepSpec.model_validate(spec))
    except (ValueError, KeyError):
        return []
    return [(task, mode, why) for task, (mode, why) in choices.items()]


def _sweep_context(snapshot: SweepSnapshot) -> dict[str, Any]:
    return {
        "sweep": snapshot,
        "auto_execution": _auto_execution(snapshot.spec),
        "caveats": task_caveats(snapshot.spec.get("tasks", []) or []),
        "progress": snapshot.progress,
        "recent_trials": _recent_trials(snapshot),
        "curve_trials": [trial for trial, _ in snapshot.curves],
        "verdict": sweep_verdict(snapshot.analysis),
        "edge_advice": EDGE_ADVICE,
        "bracket_protocol": snapshot.spec.get("protocol") == "bracket",
        "bracket": stored_bracket_summaries(
            snapshot.spec, snapshot.trials, snapshot.analysis, sweep_over=snapshot.finished
        ),
        **_tables_context(snapshot),
    }


SWEEP_FRAGMENTS: tuple[str, ...] = ("sweep-summary", "sweep-verdict", "sweep-tables", "sweep-trials")
#: The fragment of a ``bracket`` sweep's page only: its rounds.
BRACKET_FRAGMENT = "sweep-bracket"


def sweep_update(
    snapshot: SweepSnapshot, *, root: str = "", figures: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """What a live sweep page polls: version, status, every figure and the re-rendered fragments.

    ``figures``: :func:`sweep_figures` of ``snapshot`` when already built (they are built here otherwise).
    """
    context = {**_sweep_context(snapshot), "assets": served_assets(root)}
    return {
        "changed": True,
        "version": snapshot.version,
        "status": snapshot.status,
        "finished": snapshot.finished,
        "counts": snapshot.counts,
        "figures": sweep_figures(snapshot) if figures is None else figures,
        "fragments": render_fragments(
            "_sweep_fragments.html",
            (*SWEEP_FRAGMENTS, BRACKET_FRAGMENT) if context["bracket_protocol"] else SWEEP_FRAGMENTS,
            **context,
        ),
    }


def unchanged_update(version: str, *, status: str, finished: bool) -> dict[str, Any]:
    """The poll answer when nothing changed since ``version``."""
    return {"changed": False, "version": version, "status": status, "finished": finished}


def _live(
    url: str, version: str, finished: bool, refresh_seconds: float, etag: str | None = None
) -> dict[str, Any]:
    interval = max(MIN_REFRESH_SECONDS, float(refresh_seconds))
    live = {"url": url, "version": version, "finished": finished, "interval_ms": int(interval * 1000)}
    if etag is not None:
        live["etag"] = etag  # the poll sends it as If-None-Match: 304 while nothing changed
    return live


# --- pages ------------------------------------------------------------------------------------------


def render_sweeps_page(
    sweeps: Sequence[SweepListItem],
    *,
    total: int,
    offset: int = 0,
    limit: int = 50,
    root: str = "",
    findings_headline: str | None = None,
) -> str:
    """The list of sweeps, newest first, each with its status and a progress bar; paged by offset/limit.
    ``findings_headline``: the headline of ``/findings`` (linked above the list)."""
    return render(
        "sweeps.html",
        assets=served_assets(root),
        sweeps=list(sweeps),
        total=total,
        offset=offset,
        limit=limit,
        findings_headline=findings_headline,
        figures=None,
        live=None,
    )


def render_findings_page(findings: Findings, *, root: str = "") -> str:
    """Every finished sweep's verdicts as one task x optimiser table (``nero_study.study.findings``), with the
    headline, per-optimiser tallies, the filters (budget, preset, task) and the sweeps it reads."""
    chosen = {name: value for name, value in asdict(findings.filters).items() if value is not None}
    tasks = list(findings.available_tasks)
    if findings.filters.task is not None and findings.filters.task not in tasks:
        tasks.append(findings.filters.task)
    return render(
        "findings.html",
        assets=served_assets(root),
        findings=findings,
        edge_advice=EDGE_ADVICE,
        query=f"?{urlencode(chosen)}" if chosen else "",
        budgets=BUDGETS,
        presets=PRESETS,
        tasks=tasks,
        figures=None,
        live=None,
    )


def render_sweep_page(
    snapshot: SweepSnapshot,
    *,
    root: str = "",
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
    figures: dict[str, dict[str, Any]] | None = None,
    figures_etag: str | None = None,
) -> str:
    """A sweep's page: progress, the verdict per task, every figure, the paper-style table and the robustness
    metrics.

    While the sweep has not finished the page polls ``/sweeps/<id>/figures.json`` every ``refresh_seconds``,
    with ``If-None-Match: <figures_etag>`` (the validator of that URL at the page's version) when given.
    ``figures``: :func:`sweep_figures` of ``snapshot`` when already built.
    """
    assets = served_assets(root)
    live = None
    if not snapshot.finished:
        url = f"{assets.root}/sweeps/{snapshot.id}/figures.json"
        live = _live(url, snapshot.version, snapshot.finished, refresh_seconds, figures_etag)
    return render(
        "sweep.html",
        assets=assets,
        figures=sweep_figures(snapshot) if figures is None else figures,
        live=live,
        report=False,
        generated_at=None,
        **_sweep_context(snapshot),
    )


def render_report(
    snapshot: SweepSnapshot,
    *,
    generated_at: datetime | None = None,
    figures: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The single-file report of a sweep: the sweep page's figures and tables with everything inlined."""
    return render(
        "sweep.html",
        assets=inline_assets(),
        figures=sweep_figures(snapshot) if figures is None else figures,
        live=None,
        report=True,
        generated_at=generated_at or datetime.now(UTC),
        **_sweep_context(snapshot),
    )


def trial_figures(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The trial page's figure (metric and training loss against step), keyed by figure id."""
    info = learning_curves_info([(trial, curve)])
    title = f"Learning curve of trial {trial.get('id')}"
    text = {value for column in _USER_COLUMNS if isinstance(value := trial.get(column), str)}
    return {"curve": figure_to_dict(plot_learning_curves(info, title=title), user_text=text)}


TRIAL_FRAGMENTS: tuple[str, ...] = ("trial-details",)


def _trial_context(trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]], sweep_name: str | None) -> dict:
    return {"trial": dict(trial), "points": len(curve), "sweep_name": sweep_name}


def trial_update(
    trial: Mapping[str, Any], curve: Sequence[Mapping[str, Any]], *, sweep_name: str | None = None, root: str = ""
) -> dict[str, Any]:
    """What a live trial page polls: version, status, the curve figure and the details fragment."""
    context = {**_trial_context(trial, curve, sweep_name), "assets": served_assets(root)}
    return {
        "changed": True,
        "version": trial_version(trial, curve),
        "status": trial.get("status"),
        "finished": trial.get("status") in TRIAL_ENDED,
        "figures": trial_figures(trial, curve),
        "fragments": render_fragments("_trial_fragments.html", TRIAL_FRAGMENTS, **context),
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
    finished = trial.get("status") in TRIAL_ENDED
    live = None
    if not finished:
        url = f"{assets.root}/trials/{trial.get('id')}/figures.json"
        live = _live(url, trial_version(trial, curve), finished, refresh_seconds)
    return render(
        "trial.html",
        assets=assets,
        figures=trial_figures(trial, curve),
        live=live,
        **_trial_context(trial, curve, sweep_name),
    )


def compare_figures(snapshots: Sequence[SweepSnapshot]) -> dict[str, dict[str, Any]]:
    """The lr-sensitivity figure of each sweep (``lr-sensitivity-<index>``), in colours shared by all of them."""
    labels = _shared_labels(snapshots)
    colors = optimizer_colors(labels)
    result = {}
    for index, snapshot in enumerate(snapshots):
        info = _noted(lr_sensitivity_info(snapshot.trials, snapshot.analysis, labels=labels), _analysis_note(snapshot))
        fig = plot_lr_sensitivity(info, colors=colors, title=f"Learning-rate sensitivity: {snapshot.name}")
        text = set().union(*(user_text(each) for each in snapshots))
        result[f"lr-sensitivity-{index}"] = figure_to_dict(fig, user_text=text)
    return result


def _shared_labels(snapshots: Sequence[SweepSnapshot]) -> list[str]:
    """Every sweep's labels, in order of first appearance (so one label has one colour on the compare page)."""
    labels: list[str] = []
    for snapshot in snapshots:
        labels.extend(label for label in snapshot.labels if label not in labels)
    return labels


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
    return render(
        "compare.html", assets=served_assets(root), columns=columns, figures=compare_figures(snapshots), live=None
    )


def render_not_found(message: str, *, title: str = "Not found", root: str = "") -> str:
    """The 404 (or other error) page: what went wrong, and a link back to the sweep list."""
    return render("not_found.html", assets=served_assets(root), title=title, message=message, figures=None, live=None)


__all__ = [
    "DEFAULT_REFRESH_SECONDS",
    "MIN_REFRESH_SECONDS",
    "SWEEP_FIGURES",
    "compare_figures",
    "render_compare_page",
    "render_findings_page",
    "render_not_found",
    "render_report",
    "render_sweep_page",
    "render_sweeps_page",
    "render_trial_page",
    "SweepFigures",
    "sweep_figures",
    "sweep_update",
    "trial_figures",
    "trial_update",
    "unchanged_update",
    "updated_sweep_figures",
]
