"""The lr-sensitivity figure on the known sweep of conftest.py: its numbers (worked out by hand below), then the
drawing (log lr axes, marks at the right places and spread apart, hover text, one legend group per optimiser)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboards import drawing
from dashboards.common import KNOWN_OPTIMIZER_COLORS
from dashboards.lr_sensitivity import LrSensitivityInfo, LrSeries, lr_sensitivity_info, plot_lr_sensitivity

SQRT2 = math.sqrt(2.0)


def series(info: LrSensitivityInfo, task: str, label: str) -> LrSeries:
    panel = next(p for p in info.panels if p.task == task)
    return next(s for s in panel.series if s.label == label)


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


def one_sgd_run_diverged_at_its_default_lr() -> pd.DataFrame:
    """sgd on digits-mlp: 0.3 at lr 0.01; its default lr 0.1, where the only seed diverged."""
    return pd.DataFrame(
        [
            {
                "task": "digits-mlp",
                "optimizer": "sgd",
                "label": "sgd",
                "lr": lr,
                "seed": 0,
                "status": status,
                "metric": metric,
                "initial_metric": 0.9,
                "metric_name": "test_error",
                "lower_is_better": True,
            }
            for lr, status, metric in ((0.01, "succeeded", 0.3), (0.1, "diverged", math.nan))
        ]
    )


@pytest.fixture
def lr_figure(known_trials: pd.DataFrame) -> go.Figure:
    return plot_lr_sensitivity(lr_sensitivity_info(known_trials, labels=("nero", "adam")))


# --- the numbers ------------------------------------------------------------------------------------


def test_lr_sensitivity_means_and_stds_over_finite_seeds(known_trials: pd.DataFrame) -> None:
    info = lr_sensitivity_info(known_trials, labels=("nero", "adam"))
    assert [p.task for p in info.panels] == ["digits-mlp", "ppo-cartpole"]
    assert info.labels == ("nero", "adam")
    nero = series(info, "digits-mlp", "nero")
    assert nero.lrs == (0.001, 0.01, 0.1, 1.0)
    # 0.001: (0.5, 0.7) -> 0.6, std sqrt(2 * 0.1^2 / 1) = 0.1 * sqrt(2); 0.01: (0.2, 0.4) -> 0.3, same std;
    # 0.1: one finite seed (0.8), one diverged -> 0.8, no std; 1.0: both diverged -> no mean.
    assert nero.means == pytest.approx((0.6, 0.3, 0.8, None))
    assert nero.stds[0] == pytest.approx(0.1 * SQRT2)
    assert nero.stds[1] == pytest.approx(0.1 * SQRT2)
    assert nero.stds[2:] == (None, None)
    assert nero.seeds == (2, 2, 2, 2)
    assert nero.diverged == (0, 0, 1, 2)
    assert nero.failed == (0, 0, 0, 0)
    adam = series(info, "digits-mlp", "adam")
    # 0.001: (0.35, 0.45) -> 0.4 ± 0.05 sqrt(2); 0.01: (0.2, 0.3) -> 0.25; 0.1: (0.6, 0.6) -> 0.6 ± 0; 1.0: failed x2.
    assert adam.means == pytest.approx((0.4, 0.25, 0.6, None))
    assert adam.stds[0] == pytest.approx(0.05 * SQRT2)
    assert adam.stds[2] == pytest.approx(0.0)
    assert adam.failed == (0, 0, 0, 2)
    assert adam.diverged == (0, 0, 0, 0)


def test_lr_sensitivity_marks(known_trials: pd.DataFrame) -> None:
    info = lr_sensitivity_info(known_trials)
    panel = info.panels[0]
    # Top of the finite range of digits-mlp: max over mean + std = max(0.6 + 0.141, 0.3 + 0.141, 0.8,
    # 0.4 + 0.071, 0.25 + 0.071, 0.6 + 0) = 0.8.
    assert panel.top == pytest.approx(0.8)
    assert not panel.log_metric  # 0.8 / (0.25 - 0.07) < 20
    nero = series(info, "digits-mlp", "nero")
    # nero's default lr is 0.01 (mean 0.3), and its best (analysis: m = 0.6, 0.3, 0.85, 0.9) is 0.01 too.
    assert nero.default_marker is not None and nero.best_marker is not None
    assert (nero.default_marker.lr, nero.default_marker.value) == pytest.approx((0.01, 0.3))
    assert (nero.best_marker.lr, nero.best_marker.value) == pytest.approx((0.01, 0.3))
    assert (nero.default_lr, nero.best_lr, nero.best) == pytest.approx((0.01, 0.01, 0.3))
    adam = series(info, "digits-mlp", "adam")
    # adam's default lr is 0.001 (0.4); best 0.01 (0.25).
    assert (adam.default_marker.lr, adam.default_marker.value) == pytest.approx((0.001, 0.4))
    assert (adam.best_marker.lr, adam.best_marker.value) == pytest.approx((0.01, 0.25))
    # Diverged/failed marks: nero at 0.1 (1 diverged) and 1.0 (2 diverged); adam at 1.0 (2 failed); all at the top.
    assert [m.lr for m in nero.diverged_markers] == [0.1, 1.0]
    assert [m.lr for m in adam.diverged_markers] == [1.0]
    assert all(m.value == panel.top for m in (*nero.diverged_markers, *adam.diverged_markers))


def test_lr_sensitivity_higher_is_better_task(known_trials: pd.DataFrame) -> None:
    info = lr_sensitivity_info(known_trials)
    panel = info.panels[1]
    assert panel.task == "ppo-cartpole" and not panel.lower_is_better
    assert panel.top == pytest.approx(150.0)
    adam = series(info, "ppo-cartpole", "adam")
    # Returns: adam 150 at 0.001 (its default lr) beats 20 at 0.01: best and default both at 0.001.
    assert (adam.best_marker.lr, adam.best_marker.value) == pytest.approx((0.001, 150.0))
    assert (adam.default_marker.lr, adam.default_marker.value) == pytest.approx((0.001, 150.0))
    assert adam.diverged_markers == ()


def test_all_seeds_diverged_at_default_lr_marks_the_default_at_the_top() -> None:
    info = lr_sensitivity_info(one_sgd_run_diverged_at_its_default_lr())
    sgd = info.panels[0].series[0]
    # sgd's default lr is 0.1, where the only seed diverged: the diamond sits at the top (0.3), not dropped.
    assert sgd.default_marker is not None
    assert (sgd.default_marker.lr, sgd.default_marker.value) == pytest.approx((0.1, 0.3))
    assert sgd.means == (0.3, None) and sgd.diverged == (0, 1)
    # Its hover text says it diverged rather than showing a number.
    fig = plot_lr_sensitivity(info)
    default = mark(fig, "x", "sgd", drawing.DEFAULT_LR_SYMBOL)
    assert list(default.text) == ["sgd default lr 0.1: diverged"]


def test_empty_and_unfinished_trials_give_a_note() -> None:
    assert lr_sensitivity_info(pd.DataFrame()).note == "No finished trials yet"
    pending = pd.DataFrame(
        [
            {
                "task": "digits-mlp",
                "optimizer": "nero",
                "label": "nero",
                "lr": 0.01,
                "seed": 0,
                "status": "pending",
                "metric": math.nan,
                "initial_metric": math.nan,
                "metric_name": None,
                "lower_is_better": None,
            }
        ]
    )
    info = lr_sensitivity_info(pending)
    assert info.panels == () and info.note


# --- the drawing ------------------------------------------------------------------------------------


def test_lr_sensitivity_one_log_panel_per_task(lr_figure: go.Figure) -> None:
    titles = [a.text for a in lr_figure.layout.annotations]
    assert titles == ["digits-mlp", "ppo-cartpole"]
    assert lr_figure.layout.xaxis.type == "log" and lr_figure.layout.xaxis2.type == "log"
    assert lr_figure.layout.xaxis.title.text == "learning rate"
    assert "lower is better" in lr_figure.layout.yaxis.title.text
    assert "higher is better" in lr_figure.layout.yaxis2.title.text
    assert {t.xaxis for t in lr_figure.data} <= {"x", "x2"}


def test_lr_sensitivity_one_legend_group_per_optimiser(lr_figure: go.Figure) -> None:
    groups = {t.legendgroup for t in lr_figure.data} - {drawing.MARKS_GROUP}
    assert groups == {"nero", "adam"}
    for group in groups:
        traces = [t for t in lr_figure.data if t.legendgroup == group]
        assert sum(1 for t in traces if t.showlegend is not False) == 1  # one legend entry per optimiser
        colors = {t.line.color for t in traces if t.mode == "lines+markers"} | {
            t.marker.color for t in traces if t.mode == "markers"
        }
        assert colors == {KNOWN_OPTIMIZER_COLORS[group]}  # the same colour on every trace of the group


def test_lr_sensitivity_colours_can_be_given(known_trials: pd.DataFrame) -> None:
    """The compare page draws several sweeps in shared colours: the colours passed in are the ones drawn."""
    fig = plot_lr_sensitivity(lr_sensitivity_info(known_trials), colors={"nero": "#000001", "adam": "#000002"})
    line = next(t for t in fig.data if t.legendgroup == "nero" and t.mode == "lines+markers")
    assert line.line.color == "#000001"


def test_lr_sensitivity_mean_line_and_seed_band(lr_figure: go.Figure) -> None:
    nero_line = next(t for t in traces_in(lr_figure, "x") if t.legendgroup == "nero" and t.mode == "lines+markers")
    assert list(nero_line.x) == [0.001, 0.01, 0.1, 1.0]
    assert list(nero_line.y) == pytest.approx([0.6, 0.3, 0.8, None])
    band = next(t for t in traces_in(lr_figure, "x") if t.legendgroup == "nero" and t.fill == "toself")
    # Upper edge mean + std over the three lrs with a mean, then the lower edge back: 0.6 ± 0.1414 first.
    assert band.y[0] == pytest.approx(0.6 + 0.1 * math.sqrt(2))
    assert band.y[-1] == pytest.approx(0.6 - 0.1 * math.sqrt(2))


def test_lr_sensitivity_hover_text(lr_figure: go.Figure) -> None:
    nero_line = next(t for t in traces_in(lr_figure, "x") if t.legendgroup == "nero" and t.mode == "lines+markers")
    assert list(nero_line.text) == [
        "nero lr=0.001: 0.6 ± 0.14 (2 seeds)",
        "nero lr=0.01: 0.3 ± 0.14 (2 seeds)",
        "nero lr=0.1: 0.8 (2 seeds, 1 diverged/failed)",
        "nero lr=1: — (2 seeds, 2 diverged/failed)",
    ]
    assert list(mark(lr_figure, "x", "adam", drawing.BEST_LR_SYMBOL).text) == ["adam best lr 0.01: 0.25"]
    assert list(mark(lr_figure, "x", "adam", drawing.DEFAULT_LR_SYMBOL).text) == ["adam default lr 0.001: 0.4"]
    assert list(mark(lr_figure, "x", "nero", drawing.DIVERGED_SYMBOL).text) == [
        "nero lr=0.1: 1 diverged, 0 failed of 2",
        "nero lr=1: 2 diverged, 0 failed of 2",
    ]
    assert list(mark(lr_figure, "x", "adam", drawing.DIVERGED_SYMBOL).text) == ["adam lr=1: 0 diverged, 2 failed of 2"]


def test_lr_sensitivity_default_and_best_marks(lr_figure: go.Figure) -> None:
    nero_default = mark(lr_figure, "x", "nero", drawing.DEFAULT_LR_SYMBOL)
    assert (list(nero_default.x), list(nero_default.y)) == ([0.01], [pytest.approx(0.3)])
    adam_default = mark(lr_figure, "x", "adam", drawing.DEFAULT_LR_SYMBOL)
    assert (list(adam_default.x), list(adam_default.y)) == ([0.001], [pytest.approx(0.4)])
    adam_best = mark(lr_figure, "x", "adam", drawing.BEST_LR_SYMBOL)
    assert (list(adam_best.x), list(adam_best.y)) == ([0.01], [pytest.approx(0.25)])
    ppo_adam_best = mark(lr_figure, "x2", "adam", drawing.BEST_LR_SYMBOL)
    assert (list(ppo_adam_best.x), list(ppo_adam_best.y)) == ([0.001], [pytest.approx(150.0)])


def test_lr_sensitivity_diverged_marks_at_the_top(lr_figure: go.Figure) -> None:
    nero_bad = mark(lr_figure, "x", "nero", drawing.DIVERGED_SYMBOL)
    adam_bad = mark(lr_figure, "x", "adam", drawing.DIVERGED_SYMBOL)
    assert len(nero_bad.x) == 2 and len(adam_bad.x) == 1  # nero at 0.1 and 1.0, adam at 1.0: none dropped
    assert nero_bad.x[0] == 0.1 and nero_bad.x[1] == pytest.approx(1.0, rel=0.1)
    assert adam_bad.x[0] == pytest.approx(1.0, rel=0.1) and adam_bad.x[0] != nero_bad.x[1]
    others = [t for t in traces_in(lr_figure, "x") if t.marker is None or t.marker.symbol != drawing.DIVERGED_SYMBOL]
    top = max(finite_ys(others))
    # At the top of the finite data (0.8, nero's lone seed at 0.1), not beyond it: the axis is not stretched.
    assert list(nero_bad.y) == pytest.approx([0.8, 0.8]) and list(adam_bad.y) == pytest.approx([0.8])
    assert top == pytest.approx(0.8)
    assert nero_bad.cliponaxis is False


def test_lr_sensitivity_overlapping_diverged_marks_are_spread_apart(lr_figure: go.Figure) -> None:
    nero_bad = mark(lr_figure, "x", "nero", drawing.DIVERGED_SYMBOL)
    adam_bad = mark(lr_figure, "x", "adam", drawing.DIVERGED_SYMBOL)
    # Two optimisers at lr 1.0, in series order around it, each by half the spread (0.035 decades apart):
    # nero at 10^-0.0175, adam at 10^+0.0175. A lone mark (nero at 0.1) stays at its lr.
    assert nero_bad.x[1] == pytest.approx(10**-0.0175, rel=1e-12)
    assert adam_bad.x[0] == pytest.approx(10**0.0175, rel=1e-12)
    assert nero_bad.x[0] == 0.1


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
    fig = plot_lr_sensitivity(lr_sensitivity_info(frame))
    assert fig.layout.yaxis.type == "log"  # 200 / 5 >= 20

