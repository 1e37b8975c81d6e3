"""Expected best after k random learning rates: the analysis's order-statistics numbers, then the lines."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboards.expected_best import expected_best_info, plot_expected_best
from nero_study.study.analysis import analyze_sweep


def test_expected_best(known_trials: pd.DataFrame) -> None:
    info = expected_best_info(analyze_sweep(known_trials))
    nero = next(s for s in info.panels[0].series if s.label == "nero")
    # nero's m over the grid (diverged = m0 = 0.9): 0.6, 0.3, 0.85, 0.9. k = 1: the mean, 0.6625. k = 4, sorted
    # 0.3, 0.6, 0.85, 0.9 with weights 1 - (3/4)^4, (3/4)^4 - (1/2)^4, (1/2)^4 - (1/4)^4, (1/4)^4: 0.41074.
    assert nero.ks == (1, 2, 3, 4)
    assert nero.values[0] == pytest.approx(0.6625)
    assert nero.values[3] == pytest.approx(0.4107421875)


def test_expected_best_lines(known_trials: pd.DataFrame) -> None:
    fig = plot_expected_best(expected_best_info(analyze_sweep(known_trials)))
    nero = next(t for t in fig.data if t.legendgroup == "nero" and (t.xaxis or "x") == "x")
    assert list(nero.x) == [1, 2, 3, 4]
    assert nero.y[0] == pytest.approx(0.6625) and nero.y[3] == pytest.approx(0.4107421875)
