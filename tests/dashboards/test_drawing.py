"""What every figure shares: an empty figure with a note when there is no data, labelled log ticks, plain JSON."""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboards.drawing import figure_to_dict, log_ticks, metric_axis, rgba
from dashboards.expected_best import expected_best_info, plot_expected_best
from dashboards.learning_curves import learning_curves_info, plot_learning_curves
from dashboards.lr_sensitivity import lr_sensitivity_info, plot_lr_sensitivity
from dashboards.normalized_score import normalized_score_info, plot_normalized_heatmap
from dashboards.ootb_vs_tuned import ootb_vs_tuned_info, plot_ootb_vs_tuned
from dashboards.performance_profiles import performance_profile_info, plot_performance_profiles
from dashboards.progress import plot_sweep_progress, sweep_progress_info
from nero_study.study.analysis import analyze_sweep


@pytest.mark.parametrize(
    "build",
    [
        lambda: plot_lr_sensitivity(lr_sensitivity_info(pd.DataFrame())),
        lambda: plot_ootb_vs_tuned(ootb_vs_tuned_info(analyze_sweep([]))),
        lambda: plot_normalized_heatmap(normalized_score_info(analyze_sweep([]))),
        lambda: plot_performance_profiles(performance_profile_info(analyze_sweep([]))),
        lambda: plot_expected_best(expected_best_info(analyze_sweep([]))),
        lambda: plot_learning_curves(learning_curves_info([])),
        lambda: plot_sweep_progress(sweep_progress_info(pd.DataFrame())),
    ],
    ids=["lr", "ootb", "heatmap", "profiles", "expected-best", "curves", "progress"],
)
def test_no_data_gives_an_empty_figure_with_a_note(build: Callable[[], go.Figure]) -> None:
    fig = build()
    assert len(fig.data) == 0
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 1 and notes[0].startswith("No ")
    figure_to_dict(fig)  # and it serialises


def test_log_ticks_are_labelled_values() -> None:
    # 0.0196 .. 0.87: 1-2-5 steps 0.02, 0.05, 0.1, 0.2, 0.5, 1 (6 <= 8 labels).
    ticks = log_ticks([0.0196, 0.87, None, math.nan])
    assert ticks["tickvals"] == [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert ticks["ticktext"] == ["0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    # 1e-4 .. 1: 1-2-5 would give 13 labels; powers of ten instead.
    assert log_ticks([1e-4, 1.0])["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert log_ticks([2.3, 2.9]) == {} and log_ticks([]) == {}


def test_metric_axis_is_log_with_ticks_or_linear() -> None:
    assert metric_axis(False, [1.0, 100.0]) == {"type": "linear"}
    assert metric_axis(True, [1.0, 100.0]) == {"type": "log", **log_ticks([1.0, 100.0])}


def test_rgba() -> None:
    assert rgba("#d62728", 0.5) == "rgba(214, 39, 40, 0.5)"
    assert rgba("red", 0.5) == "red"  # not #rrggbb: left alone


def test_figure_to_dict_is_plain_json(known_trials: pd.DataFrame) -> None:
    as_dict = figure_to_dict(plot_lr_sensitivity(lr_sensitivity_info(known_trials)))
    assert set(as_dict) == {"data", "layout"}
    line = next(t for t in as_dict["data"] if t.get("legendgroup") == "nero" and t.get("mode") == "lines+markers")
    assert line["y"][-1] is None  # a gap, not NaN (plain JSON has no NaN)
