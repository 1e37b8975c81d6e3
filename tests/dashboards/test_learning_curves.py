"""Learning curves: downsampling that keeps a curve's shape, where a run went wrong, the choice of trials, and
the drawing (one row per task, an x at the top of the panel where a value was NaN)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboards import drawing
from dashboards.common import MAX_CURVE_POINTS
from dashboards.learning_curves import (
    downsample_indices,
    learning_curves_info,
    plot_learning_curves,
    select_curve_trials,
)
from nero_study.study.analysis import analyze_sweep


def test_downsample_keeps_ends_extremes_and_nonfinite() -> None:
    values: list[float | None] = [math.sin(i / 20.0) for i in range(1000)]
    values[500] = -10.0  # the global minimum
    values[700] = 10.0  # the global maximum
    values[900] = math.nan  # where a run diverged
    values[950] = None  # never reported: missing
    kept = downsample_indices(values, max_points=200)
    assert len(kept) <= 200
    assert {0, 999, 500, 700, 900} <= set(kept)
    assert list(kept) == sorted(kept)
    assert downsample_indices([1.0, 2.0, 3.0], max_points=200) == (0, 1, 2)


def test_learning_curves_downsampled_with_divergence_marks() -> None:
    curve = [{"step": step, "metric": 1.0 / (1 + step), "train_loss": 2.0 - step / 1000} for step in range(1000)]
    curve[-1] = {"step": 999, "metric": 0.5, "train_loss": math.nan}
    trial = {"id": 7, "task": "digits-mlp", "label": "nero", "lr": 0.01, "seed": 0, "metric_name": "test_error"}
    info = learning_curves_info([(trial, curve)])
    row = info.rows[0]
    assert (row.task, row.metric_name) == ("digits-mlp", "test_error")
    metric, loss = row.metric.series[0], row.train_loss.series[0]
    assert len(metric.steps) <= MAX_CURVE_POINTS and len(loss.steps) <= MAX_CURVE_POINTS
    assert metric.steps[0] == 0 and metric.steps[-1] == 999
    assert metric.values[0] == pytest.approx(1.0)
    assert loss.diverged_steps == (999,) and loss.values[-1] is None
    assert row.train_loss.top == pytest.approx(2.0)
    assert (metric.label, metric.lr, metric.seed, metric.trial_id) == ("nero", 0.01, 0, 7)
    assert metric.diverged_steps == ()
    fig = plot_learning_curves(info)
    assert [a.text for a in fig.layout.annotations] == ["digits-mlp: test_error", "digits-mlp: training loss"]
    assert {t.name for t in fig.data if t.mode == "lines"} == {"nero lr=0.01 seed 0"}


def test_learning_curves_leading_nan_is_not_divergence_and_a_stopped_run_is_marked() -> None:
    # The training loss is NaN at step 0 (nothing trained yet); this run diverged and was stopped at step 20
    # with finite values: its last step is marked, the leading NaN is dropped.
    curve = [
        {"step": 0, "metric": 0.9, "train_loss": math.nan},
        {"step": 10, "metric": 0.5, "train_loss": 1.0},
        {"step": 20, "metric": 0.7, "train_loss": 3.0},
    ]
    trial = {"id": 1, "task": "digits-mlp", "label": "sgd", "lr": 1.0, "seed": 0, "status": "diverged"}
    row = learning_curves_info([(trial, curve)]).rows[0]
    loss = row.train_loss.series[0]
    assert loss.steps == (10, 20) and loss.values == (1.0, 3.0)
    assert loss.diverged_steps == (20,)
    assert row.metric.series[0].diverged_steps == (20,)
    succeeded = learning_curves_info([({**trial, "status": "succeeded"}, curve)]).rows[0]
    assert succeeded.train_loss.series[0].diverged_steps == ()


def test_learning_curves_divergence_marked_at_top() -> None:
    curve = [
        {"step": 0, "metric": 0.9, "train_loss": 2.3},
        {"step": 5, "metric": 0.5, "train_loss": 1.1},
        {"step": 10, "metric": 0.6, "train_loss": math.nan},
    ]
    trial = {"id": 3, "task": "digits-mlp", "label": "sgd", "lr": 1.0, "seed": 0, "metric_name": "test_error"}
    fig = plot_learning_curves(learning_curves_info([(trial, curve)]))
    assert [a.text for a in fig.layout.annotations] == ["digits-mlp: test_error", "digits-mlp: training loss"]
    loss_line = next(t for t in fig.data if t.xaxis == "x2" and t.mode == "lines")
    assert list(loss_line.y) == [2.3, 1.1, None]
    bad = next(t for t in fig.data if t.xaxis == "x2" and t.mode == "markers")
    assert list(bad.x) == [10] and list(bad.y) == [2.3]  # at the top of the finite training losses
    assert bad.marker.symbol == drawing.DIVERGED_SYMBOL


def test_select_curve_trials_takes_a_succeeded_run_at_the_best_lr(known_trials: pd.DataFrame) -> None:
    chosen = select_curve_trials(known_trials, analyze_sweep(known_trials))
    picked = {(t["task"], t["label"]): (t["lr"], t["seed"], t["status"]) for t in chosen}
    # Best lrs (analysis): digits nero 0.01, adam 0.01; ppo nero 0.01 (100), adam 0.001 (150). Lowest seed first.
    assert picked == {
        ("digits-mlp", "nero"): (0.01, 0, "succeeded"),
        ("digits-mlp", "adam"): (0.01, 0, "succeeded"),
        ("ppo-cartpole", "nero"): (0.01, 0, "succeeded"),
        ("ppo-cartpole", "adam"): (0.001, 0, "succeeded"),
    }
    # A succeeded run is preferred over a diverged one with a lower seed at the same lr (nero's lr 0.01 still
    # best: (0.2 + 0.9) / 2 = 0.55 < 0.6).
    frame = known_trials.copy()
    frame.loc[(frame["label"] == "nero") & (frame["task"] == "digits-mlp") & (frame["lr"] == 0.01), "seed"] = [1, 0]
    frame.loc[(frame["label"] == "nero") & (frame["task"] == "digits-mlp") & (frame["lr"] == 0.01), "status"] = [
        "succeeded",
        "diverged",
    ]
    nero = next(t for t in select_curve_trials(frame, analyze_sweep(frame)) if t["label"] == "nero")
    assert (nero["task"], nero["seed"], nero["status"]) == ("digits-mlp", 1, "succeeded")
