"""Expected best after k random learning rates: the analysis's order-statistics numbers, then the lines."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboards.expected_best import expected_best_info, plot_expected_best
from nero_study.study.analysis import analyze_sweep


def test_expected_best(known_trials: pd.DataFrame) -> None:
    info = expected_best_info(analyze_sweep(known_trials))
    nero = next(s for s in info.panels[0].series if s.label == "nero")
    # On the lrs common to nero and adam (adam's lr 1 only failed: 0.001, 0.01, 0.1), nero's m (diverged = m0):
    # 0.6, 0.3, 0.85. k = 1: the mean, 1.75 / 3. k = 3, sorted 0.3, 0.6, 0.85 with weights 1 - (2/3)^3,
    # (2/3)^3 - (1/3)^3, (1/3)^3 = (19, 7, 1) / 27.
    assert nero.ks == (1, 2, 3)
    assert nero.values[0] == pytest.approx(1.75 / 3)
    assert nero.values[2] == pytest.approx((0.3 * 19 + 0.6 * 7 + 0.85) / 27)


def test_expected_best_lines(known_trials: pd.DataFrame) -> None:
    fig = plot_expected_best(expected_best_info(analyze_sweep(known_trials)))
    nero = next(t for t in fig.data if t.legendgroup == "nero" and (t.xaxis or "x") == "x")
    assert list(nero.x) == [1, 2, 3]
    assert nero.y[0] == pytest.approx(1.75 / 3) and nero.y[2] == pytest.approx((0.3 * 19 + 0.6 * 7 + 0.85) / 27)
