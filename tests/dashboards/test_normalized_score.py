"""The normalised-score heatmap: 0 = chance, 1 = the best of all optimisers, in both orientations."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboards.normalized_score import normalized_score, normalized_score_info, plot_normalized_heatmap
from nero_study.study.analysis import analyze_sweep


def test_normalized_scores(known_trials: pd.DataFrame) -> None:
    info = normalized_score_info(analyze_sweep(known_trials), labels=("nero", "adam"))
    assert info.tasks == ("digits-mlp", "ppo-cartpole") and info.labels == ("nero", "adam")
    # digits-mlp: m0 0.9, best of all 0.25 (adam): nero (0.9 - 0.3) / 0.65 = 0.923; adam ootb 0.5 / 0.65 = 0.769.
    assert info.ootb[0] == pytest.approx((0.6 / 0.65, 0.5 / 0.65))
    assert info.tuned[0] == pytest.approx((0.6 / 0.65, 1.0))
    # ppo-cartpole (higher is better): m0 10, best 150: nero (10 - 100) / (10 - 150) = 0.643; adam 1.
    assert info.ootb[1] == pytest.approx((90 / 140, 1.0))
    assert info.tuned[1] == pytest.approx((90 / 140, 1.0))
    assert normalized_score(0.5, 0.5, 0.5) is None  # nothing beat chance
    assert normalized_score(None, 0.9, 0.2) is None  # not run
    assert normalized_score(1.0, 0.9, 0.2) == pytest.approx(-0.1 / 0.7)  # worse than chance: below 0


def test_normalized_heatmap(known_trials: pd.DataFrame) -> None:
    fig = plot_normalized_heatmap(normalized_score_info(analyze_sweep(known_trials), labels=("nero", "adam")))
    ootb, tuned = fig.data
    assert list(ootb.x) == ["nero", "adam"] and list(ootb.y) == ["digits-mlp", "ppo-cartpole"]
    assert ootb.z[0] == pytest.approx((0.6 / 0.65, 0.5 / 0.65))
    assert tuned.z[0] == pytest.approx((0.6 / 0.65, 1.0))
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 1.0)
