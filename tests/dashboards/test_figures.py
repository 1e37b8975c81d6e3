"""Figure builders on the known sweep: log lr axes, marks at the right places, one legend group per optimiser."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboards import data, figures
from nero_study.study.analysis import analyze_sweep


def traces_in(fig: go.Figure, xaxis: str) -> list[go.Scatter]:
    """The traces drawn on the panel whose x axis is ``xaxis`` ('x', 'x2', ...)."""
    return [trace for trace in fig.data if (trace.xaxis or "x") == xaxis]


def mark(fig: go.Figure, xaxis: str, group: str, symbol: str) -> go.Scatter:
    found = [
        t
        for t in traces_in(fig, xaxis)
        if t.legendgroup == group and t.marker is not None and t.marker.symbol == symbol and t.mode == "markers"
    ]
    assert len(found) == 1, f"expected one {symbol} trace of {group} on {xaxis}, found {len(found)}"
    return found[0]


def finite_ys(traces: list[go.Scatter]) -> list[float]:
    return [y for trace in traces for y in (trace.y or ()) if y is not None and math.isfinite(y)]


@pytest.fixture
def lr_figure(known_trials: pd.DataFrame) -> go.Figure:
    return figures.plot_lr_sensitivity(data.lr_sensitivity_info(known_trials, labels=("nero", "adam")))


def test_lr_sensitivity_one_log_panel_per_task(lr_figure: go.Figure) -> None:
    titles = [a.text for a in lr_figure.layout.annotations]
    assert titles == ["digits-mlp", "ppo-cartpole"]
    assert lr_figure.layout.xaxis.type == "log" and lr_figure.layout.xaxis2.type == "log"
    assert lr_figure.layout.xaxis.title.text == "learning rate"
    assert "lower is better" in lr_figure.layout.yaxis.title.text
    assert "higher is better" in lr_figure.layout.yaxis2.title.text
    assert {t.xaxis for t in lr_figure.data} <= {"x", "x2"}


def test_lr_sensitivity_one_legend_group_per_optimiser(lr_figure: go.Figure) -> None:
    groups = {t.legendgroup for t in lr_figure.data} - {figures.MARKS_GROUP}
    assert groups == {"nero", "adam"}
    for group in groups:
        traces = [t for t in lr_figure.data if t.legendgroup == group]
        assert sum(1 for t in traces if t.showlegend is not False) == 1  # one legend entry per optimiser
        colors = {t.line.color for t in traces if t.mode == "lines+markers"} | {
            t.marker.color for t in traces if t.mode == "markers"
        }
        assert colors == {data.KNOWN_OPTIMIZER_COLORS[group]}  # the same colour on every trace of the group


def test_lr_sensitivity_mean_line_and_seed_band(lr_figure: go.Figure) -> None:
    nero_line = next(t for t in traces_in(lr_figure, "x") if t.legendgroup == "nero" and t.mode == "lines+markers")
    assert list(nero_line.x) == [0.001, 0.01, 0.1, 1.0]
    assert list(nero_line.y) == pytest.approx([0.6, 0.3, 0.8, None])
    band = next(t for t in traces_in(lr_figure, "x") if t.legendgroup == "nero" and t.fill == "toself")
    # Upper edge mean + std over the three lrs with a mean, then the lower edge back: 0.6 ± 0.1414 first.
    assert band.y[0] == pytest.approx(0.6 + 0.1 * math.sqrt(2))
    assert band.y[-1] == pytest.approx(0.6 - 0.1 * math.sqrt(2))


def test_lr_sensitivity_default_and_best_marks(lr_figure: go.Figure) -> None:
    nero_default = mark(lr_figure, "x", "nero", figures.DEFAULT_LR_SYMBOL)
    assert (list(nero_default.x), list(nero_default.y)) == ([0.01], [pytest.approx(0.3)])
    adam_default = mark(lr_figure, "x", "adam", figures.DEFAULT_LR_SYMBOL)
    assert (list(adam_default.x), list(adam_default.y)) == ([0.001], [pytest.approx(0.4)])
    adam_best = mark(lr_figure, "x", "adam", figures.BEST_LR_SYMBOL)
    assert (list(adam_best.x), list(adam_best.y)) == ([0.01], [pytest.approx(0.25)])
    ppo_adam_best = mark(lr_figure, "x2", "adam", figures.BEST_LR_SYMBOL)
    assert (list(ppo_adam_best.x), list(ppo_adam_best.y)) == ([0.001], [pytest.approx(150.0)])


def test_lr_sensitivity_diverged_marks_at_the_top(lr_figure: go.Figure) -> None:
    nero_bad = mark(lr_figure, "x", "nero", figures.DIVERGED_SYMBOL)
    adam_bad = mark(lr_figure, "x", "adam", figures.DIVERGED_SYMBOL)
    assert len(nero_bad.x) == 2 and len(adam_bad.x) == 1  # nero at 0.1 and 1.0, adam at 1.0: none dropped
    assert nero_bad.x[0] == 0.1 and nero_bad.x[1] == pytest.approx(1.0, rel=0.1)
    assert adam_bad.x[0] == pytest.approx(1.0, rel=0.1) and adam_bad.x[0] != nero_bad.x[1]
    others = [t for t in traces_in(lr_figure, "x") if t.marker is None or t.marker.symbol != figures.DIVERGED_SYMBOL]
    top = max(finite_ys(others))
    # At the top of the finite data (0.8, nero's lone seed at 0.1), not beyond it: the axis is not stretched.
    assert list(nero_bad.y) == pytest.approx([0.8, 0.8]) and list(adam_bad.y) == pytest.approx([0.8])
    assert top == pytest.approx(0.8)
    assert nero_bad.cliponaxis is False


def test_lr_sensitivity_log_metric_axis_for_wide_positive_ranges() -> None:
    frame = pd.DataFrame(
        [
            {
                "task": "text-lm",
                "optimizer": "adam",
                "label": "adam",
                "lr": lr,
                "seed": 0,
                "status": "succeeded",
                "metric": metric,
                "initial_metric": 256.0,
                "metric_name": "val_perplexity",
                "lower_is_better": True,
            }
            for lr, metric in ((0.0001, 200.0), (0.001, 8.0), (0.01, 5.0))
        ]
    )
    fig = figures.plot_lr_sensitivity(data.lr_sensitivity_info(frame))
    assert fig.layout.yaxis.type == "log"  # 200 / 5 >= 20


@pytest.mark.parametrize(
    "build",
    [
        lambda: figures.plot_lr_sensitivity(data.lr_sensitivity_info(pd.DataFrame())),
        lambda: figures.plot_ootb_vs_tuned(data.ootb_vs_tuned_info(analyze_sweep([]))),
        lambda: figures.plot_normalized_heatmap(data.normalized_score_info(analyze_sweep([]))),
        lambda: figures.plot_performance_profiles(data.performance_profile_info(analyze_sweep([]))),
        lambda: figures.plot_expected_best(data.expected_best_info(analyze_sweep([]))),
        lambda: figures.plot_learning_curves(data.learning_curves_info([])),
        lambda: figures.plot_sweep_progress(data.sweep_progress_info(pd.DataFrame())),
    ],
    ids=["lr", "ootb", "heatmap", "profiles", "expected-best", "curves", "progress"],
)
def test_no_data_gives_an_empty_figure_with_a_note(build: Callable[[], go.Figure]) -> None:
    fig = build()
    assert len(fig.data) == 0
    notes = [a.text for a in fig.layout.annotations]
    assert len(notes) == 1 and notes[0].startswith("No ")
    figures.figure_to_dict(fig)  # and it serialises


def test_ootb_vs_tuned_bars(known_trials: pd.DataFrame) -> None:
    fig = figures.plot_ootb_vs_tuned(data.ootb_vs_tuned_info(analyze_sweep(known_trials), labels=("nero", "adam")))
    bars = [t for t in fig.data if t.xaxis in (None, "x") and t.x is not None and None not in t.x]
    ootb = next(t for t in bars if t.legendgroup == "ootb")
    tuned = next(t for t in bars if t.legendgroup == "tuned")
    assert list(ootb.x) == ["nero", "adam"] and list(tuned.x) == ["nero", "adam"]
    assert list(ootb.y) == pytest.approx([0.3, 0.4])
    assert list(tuned.y) == pytest.approx([0.3, 0.25])
    assert list(tuned.marker.color) == [data.KNOWN_OPTIMIZER_COLORS["nero"], data.KNOWN_OPTIMIZER_COLORS["adam"]]
    assert fig.layout.barmode == "group"
    assert {a.text for a in fig.layout.annotations} == {"digits-mlp", "ppo-cartpole"}


def test_normalized_heatmap(known_trials: pd.DataFrame) -> None:
    fig = figures.plot_normalized_heatmap(
        data.normalized_score_info(analyze_sweep(known_trials), labels=("nero", "adam"))
    )
    ootb, tuned = fig.data
    assert list(ootb.x) == ["nero", "adam"] and list(ootb.y) == ["digits-mlp", "ppo-cartpole"]
    assert ootb.z[0] == pytest.approx((0.6 / 0.65, 0.5 / 0.65))
    assert tuned.z[0] == pytest.approx((0.6 / 0.65, 1.0))
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)


def test_performance_profiles_scores_in_legend(known_trials: pd.DataFrame) -> None:
    fig = figures.plot_performance_profiles(data.performance_profile_info(analyze_sweep(known_trials)))
    legend = [t.name for t in fig.data if t.showlegend is not False]
    # nero 0.8935 out of the box and tuned; adam 0.95 out of the box, 1 tuned.
    assert legend == ["nero: score 0.89 ootb, 0.89 tuned", "adam: score 0.95 ootb, 1.00 tuned"]
    assert {t.line.shape for t in fig.data} == {"hv"}
    assert len(fig.data) == 4  # two profiles (ootb, tuned) per optimiser
    assert {t.legendgroup for t in fig.data} == {"nero", "adam"}


def test_expected_best_lines(known_trials: pd.DataFrame) -> None:
    fig = figures.plot_expected_best(data.expected_best_info(analyze_sweep(known_trials)))
    nero = next(t for t in fig.data if t.legendgroup == "nero" and (t.xaxis or "x") == "x")
    assert list(nero.x) == [1, 2, 3, 4]
    assert nero.y[0] == pytest.approx(0.6625) and nero.y[3] == pytest.approx(0.4107421875)


def test_learning_curves_divergence_marked_at_top() -> None:
    curve = [
        {"step": 0, "metric": 0.9, "train_loss": 2.3},
        {"step": 5, "metric": 0.5, "train_loss": 1.1},
        {"step": 10, "metric": 0.6, "train_loss": math.nan},
    ]
    trial = {"id": 3, "task": "digits-mlp", "label": "sgd", "lr": 1.0, "seed": 0, "metric_name": "test_error"}
    fig = figures.plot_learning_curves(data.learning_curves_info([(trial, curve)]))
    assert [a.text for a in fig.layout.annotations] == ["digits-mlp: test_error", "digits-mlp: training loss"]
    loss_line = next(t for t in fig.data if t.xaxis == "x2" and t.mode == "lines")
    assert list(loss_line.y) == [2.3, 1.1, None]
    bad = next(t for t in fig.data if t.xaxis == "x2" and t.mode == "markers")
    assert list(bad.x) == [10] and list(bad.y) == [2.3]  # at the top of the finite training losses
    assert bad.marker.symbol == figures.DIVERGED_SYMBOL


def test_sweep_progress_stacked_by_status() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    trials = pd.DataFrame(
        [
            {
                "status": "succeeded",
                "created_at": t0,
                "started_at": t0 + timedelta(seconds=1),
                "finished_at": t0 + timedelta(seconds=2),
            },
            {
                "status": "diverged",
                "created_at": t0,
                "started_at": t0 + timedelta(seconds=1),
                "finished_at": t0 + timedelta(seconds=3),
            },
        ]
    )
    fig = figures.plot_sweep_progress(data.sweep_progress_info(trials))
    names = [t.name for t in fig.data]
    assert names == ["succeeded", "diverged", "running", "pending"]
    assert {t.stackgroup for t in fig.data} == {"trials"}
    succeeded = fig.data[0]
    assert list(succeeded.y) == [0, 0, 1, 1]
    assert succeeded.line.color == data.STATUS_COLORS["succeeded"]


def test_log_ticks_are_labelled_values() -> None:
    # 0.0196 .. 0.87: 1-2-5 steps 0.02, 0.05, 0.1, 0.2, 0.5, 1 (6 <= 8 labels).
    ticks = figures.log_ticks([0.0196, 0.87, None, math.nan])
    assert ticks["tickvals"] == [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert ticks["ticktext"] == ["0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    # 1e-4 .. 1: 1-2-5 would give 13 labels; powers of ten instead.
    assert figures.log_ticks([1e-4, 1.0])["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1"]
    assert figures.log_ticks([2.3, 2.9]) == {} and figures.log_ticks([]) == {}


def test_figure_to_dict_is_plain_json(lr_figure: go.Figure) -> None:
    as_dict = figures.figure_to_dict(lr_figure)
    assert set(as_dict) == {"data", "layout"}
    line = next(t for t in as_dict["data"] if t.get("legendgroup") == "nero" and t.get("mode") == "lines+markers")
    assert line["y"][-1] is None  # a gap, not NaN (plain JSON has no NaN)
