"""Performance profiles: the step curves and scores read from the analysis, then the two panels and legend."""

from __future__ import annotations

import pandas as pd
import pytest

from dashboards.performance_profiles import performance_profile_info, plot_performance_profiles, step_points
from nero_study.study.analysis import analyze_sweep


def test_performance_profiles(known_trials: pd.DataFrame) -> None:
    info = performance_profile_info(analyze_sweep(known_trials))
    tuned = {curve.label: curve for curve in info.tuned}
    ootb = {curve.label: curve for curve in info.ootb}
    # Ratios (m0 - best_all) / (m0 - m): digits nero 0.65 / 0.6 = 1.0833, adam 1 (tuned), 0.65 / 0.5 = 1.3 (ootb);
    # ppo nero 140 / 90 = 1.5556, adam 1. Score = sum_t (4 - max(r, 1)) / (2 tasks * 3):
    # digits-mlp is an error (cost ratio m / best: nero 0.3 / 0.25 = 1.2), ppo-cartpole a return (gain ratio:
    # nero 140 / 90). nero (2.8 + 2.4444) / 6 = 0.874 both ways; adam tuned 1, ootb 0.4 / 0.25 = 1.6:
    # (2.4 + 3) / 6 = 0.9.
    assert tuned["nero"].score == pytest.approx((4 - 1.2 + 4 - 140 / 90) / 6)
    assert ootb["nero"].score == pytest.approx(tuned["nero"].score)
    assert tuned["adam"].score == pytest.approx(1.0)
    assert ootb["adam"].score == pytest.approx(5.4 / 6)
    # Step points only where rho changes: nero tuned is 0 at tau 1, 0.5 from 1.09, 1 from 1.56.
    assert tuned["nero"].rho[0] == 0.0 and tuned["nero"].rho[-1] == 1.0
    assert sorted(set(tuned["nero"].rho)) == [0.0, 0.5, 1.0]
    assert len(tuned["nero"].taus) <= 5
    assert info.tasks == 2 and info.tau_max == 4.0


def test_step_points_keep_the_ends_and_every_change() -> None:
    taus, rho = step_points([1.0, 1.5, 2.0, 2.5, 3.0, 4.0], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    assert taus == (1.0, 2.0, 3.0, 4.0) and rho == (0.0, 0.5, 1.0, 1.0)


def test_performance_profiles_scores_in_legend(known_trials: pd.DataFrame) -> None:
    fig = plot_performance_profiles(performance_profile_info(analyze_sweep(known_trials)))
    legend = [t.name for t in fig.data if t.showlegend is not False]
    # nero 0.874 out of the box and tuned; adam 0.9 out of the box, 1 tuned.
    assert legend == ["nero: score 0.87 ootb, 0.87 tuned", "adam: score 0.90 ootb, 1.00 tuned"]
    assert {t.line.shape for t in fig.data} == {"hv"}
    assert len(fig.data) == 4  # two profiles (ootb, tuned) per optimiser
    assert {t.legendgroup for t in fig.data} == {"nero", "adam"}
