"""The out-of-the-box vs tuned figure: the analysis's means at the default and best lr, then the bars."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboards.common import KNOWN_OPTIMIZER_COLORS
from dashboards.ootb_vs_tuned import ootb_vs_tuned_info, plot_ootb_vs_tuned
from nero_study.study.analysis import analyze_sweep

SQRT2 = math.sqrt(2.0)


def test_ootb_vs_tuned(known_trials: pd.DataFrame) -> None:
    info = ootb_vs_tuned_info(analyze_sweep(known_trials))
    digits = info.panels[0]
    bars = {bar.label: bar for bar in digits.bars}
    # nero: default lr 0.01 -> 0.3 ± 0.141 out of the box; tuned 0.3 at 0.01.
    assert (bars["nero"].ootb, bars["nero"].tuned, bars["nero"].best_lr) == pytest.approx((0.3, 0.3, 0.01))
    assert bars["nero"].ootb_std == pytest.approx(0.1 * SQRT2)
    # adam: default lr 0.001 -> 0.4 out of the box; tuned 0.25 at 0.01 (std 0.05 sqrt 2).
    assert (bars["adam"].ootb, bars["adam"].tuned) == pytest.approx((0.4, 0.25))
    assert bars["adam"].tuned_std == pytest.approx(0.05 * SQRT2)
    assert bars["adam"].ootb_diverged == 0
    assert bars["adam"].default_lr == pytest.approx(0.001)


def test_ootb_counts_the_seeds_that_diverged_at_the_default_lr() -> None:
    # sgd (default lr 0.1) on digits-mlp: lr 0.01 -> 0.3, 0.2; lr 0.1 -> diverged, 0.5.
    rows = [
        ("succeeded", 0.01, 0, 0.3),
        ("succeeded", 0.01, 1, 0.2),
        ("diverged", 0.1, 0, math.nan),
        ("succeeded", 0.1, 1, 0.5),
    ]
    frame = pd.DataFrame(
        [
            {
                "task": "digits-mlp",
                "optimizer": "sgd",
                "label": "sgd",
                "lr": lr,
                "seed": seed,
                "status": status,
                "metric": metric,
                "initial_metric": 0.9,
                "metric_name": "test_error",
                "lower_is_better": True,
            }
            for status, lr, seed, metric in rows
        ]
    )
    bar = ootb_vs_tuned_info(analyze_sweep(frame)).panels[0].bars[0]
    # Out of the box the diverged seed counts as m0 = 0.9: mean of (0.9, 0.5) = 0.7, sample std 0.2 sqrt 2.
    # Tuned: 0.25 at 0.01.
    assert bar.default_lr == pytest.approx(0.1) and bar.ootb_diverged == 1
    assert bar.ootb == pytest.approx(0.7) and bar.ootb_std == pytest.approx(0.2 * SQRT2)
    assert (bar.tuned, bar.best_lr) == pytest.approx((0.25, 0.01))
    fig = plot_ootb_vs_tuned(ootb_vs_tuned_info(analyze_sweep(frame)))
    ootb = next(t for t in fig.data if t.legendgroup == "ootb" and t.x is not None and None not in t.x)
    assert list(ootb.text) == ["1 diverged"]  # written over the bar


def test_ootb_vs_tuned_bars(known_trials: pd.DataFrame) -> None:
    fig = plot_ootb_vs_tuned(ootb_vs_tuned_info(analyze_sweep(known_trials), labels=("nero", "adam")))
    bars = [t for t in fig.data if t.xaxis in (None, "x") and t.x is not None and None not in t.x]
    ootb = next(t for t in bars if t.legendgroup == "ootb")
    tuned = next(t for t in bars if t.legendgroup == "tuned")
    assert list(ootb.x) == ["nero", "adam"] and list(tuned.x) == ["nero", "adam"]
    assert list(ootb.y) == pytest.approx([0.3, 0.4])
    assert list(tuned.y) == pytest.approx([0.3, 0.25])
    assert list(tuned.marker.color) == [KNOWN_OPTIMIZER_COLORS["nero"], KNOWN_OPTIMIZER_COLORS["adam"]]
    assert fig.layout.barmode == "group"
    assert {a.text for a in fig.layout.annotations} == {"digits-mlp", "ppo-cartpole"}
