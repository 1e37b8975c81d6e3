"""The sweep page's fast figures (Plotly lays out the panels, kept by the layout's arguments; the traces are
written as plain dicts, ``drawing.scatter_json``) write the same JSON as the Plotly figures they stand for,
``figure_to_dict(plot_*(...))``, key order included, on random sweeps and on the known sweep."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest

from dashboards import drawing
from dashboards.expected_best import expected_best_figure, expected_best_info, plot_expected_best
from dashboards.lr_sensitivity import lr_sensitivity_figure, lr_sensitivity_info, plot_lr_sensitivity
from dashboards.normalized_score import normalized_heatmap_figure, normalized_score_info, plot_normalized_heatmap
from dashboards.ootb_vs_tuned import ootb_vs_tuned_figure, ootb_vs_tuned_info, plot_ootb_vs_tuned
from dashboards.performance_profiles import (
    performance_profile_info,
    performance_profiles_figure,
    plot_performance_profiles,
)
from dashboards.progress import plot_sweep_progress, sweep_progress_figure, sweep_progress_info
from nero_study.study.analysis import analyze_sweep


def random_sweep(seed: int, *, tasks: int, labels: tuple[str, ...]) -> pd.DataFrame:
    """Random outcomes over 5 lrs x 1 or 3 seeds per (task, optimiser): some diverged, some failed, metrics
    lower- or higher-is-better spanning wide ranges (log axes)."""
    rng = random.Random(seed)
    start = pd.Timestamp("2026-12-02 09:00", tz="UTC")
    rows = []
    for task in [f"task-{i}" for i in range(tasks)]:
        lower = rng.random() < 0.7
        for label in labels:
            for lr in (1e-3, 3e-3, 1e-2, 3e-2, 0.1):
                for s in range(rng.choice((1, 3))):
                    draw = rng.random()
                    status = "failed" if draw < 0.05 else "diverged" if draw < 0.25 else "succeeded"
                    metric = rng.uniform(0.01, 300.0) if status == "succeeded" else math.nan
                    rows.append(
                        {"task": task, "optimizer": label.split("-")[0], "label": label, "lr": lr, "seed": s,
                         "status": status, "metric": metric, "initial_metric": 300.0 if lower else -21.0,
                         "metric_name": "error" if lower else "return", "lower_is_better": lower,
                         "default_lr": 0.01, "created_at": start,
                         "started_at": start + pd.Timedelta(seconds=rng.randint(0, 60)),
                         "finished_at": start + pd.Timedelta(seconds=rng.randint(61, 600))}
                    )  # fmt: skip
    return pd.DataFrame(rows)


FIGURES = {
    "lr-sensitivity": (lambda frame, analysis: lr_sensitivity_info(frame, analysis), plot_lr_sensitivity,
                       lr_sensitivity_figure),
    "ootb-vs-tuned": (lambda frame, analysis: ootb_vs_tuned_info(analysis), plot_ootb_vs_tuned, ootb_vs_tuned_figure),
    "expected-best": (lambda frame, analysis: expected_best_info(analysis), plot_expected_best, expected_best_figure),
    "heatmap": (lambda frame, analysis: normalized_score_info(analysis), plot_normalized_heatmap,
                normalized_heatmap_figure),
    "profiles": (lambda frame, analysis: performance_profile_info(analysis), plot_performance_profiles,
                 performance_profiles_figure),
    "progress": (lambda frame, analysis: sweep_progress_info(frame), plot_sweep_progress, sweep_progress_figure),
}  # fmt: skip
#: The figures drawn without optimiser colours.
NO_COLORS = ("heatmap", "progress")


@pytest.mark.parametrize("name", sorted(FIGURES))
@pytest.mark.parametrize("seed", range(6))
def test_a_page_figure_is_its_plotly_figure_written_as_json(name: str, seed: int) -> None:
    info_of, plot, fast = FIGURES[name]
    labels = ("nero", "sgd", "adam-<b>wd</b>", "lamb")[: 2 + seed % 3]
    frame = random_sweep(seed, tasks=1 + seed % 5, labels=labels)
    empty = frame.iloc[0:0]
    for trials in (frame, empty):
        info = info_of(trials, analyze_sweep(trials))
        for kwargs in ({}, {"colors": {"nero": "#123456"}, "title": "Sensitivity & <i>more</i>"}):
            if name in NO_COLORS:
                kwargs.pop("colors", None)
            for text in ((), ("adam-<b>wd</b>", "task-1", "Sensitivity & <i>more</i>")):  # users' text as text
                reference = json.dumps(drawing.figure_to_dict(plot(info, **kwargs), user_text=text))
                for _ in range(2):  # the second time from the kept layout
                    assert json.dumps(fast(info, **kwargs, user_text=text)) == reference


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_a_page_figure_is_its_plotly_figure_on_the_known_sweep(name: str, known_trials: pd.DataFrame) -> None:
    info_of, plot, fast = FIGURES[name]
    info = info_of(known_trials, analyze_sweep(known_trials))
    assert json.dumps(fast(info)) == json.dumps(drawing.figure_to_dict(plot(info)))
