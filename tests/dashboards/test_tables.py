"""The tables of the sweep and compare pages on the known sweep: every number worked out by hand below."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dashboards.tables import paper_tables, profile_score_rows, robustness_rows
from nero_study.study.analysis import analyze_sweep

SQRT2 = math.sqrt(2.0)


def test_paper_tables(known_trials: pd.DataFrame) -> None:
    tables = paper_tables(analyze_sweep(known_trials), labels=("nero", "adam"))
    digits = tables[0]
    assert digits.task == "digits-mlp" and digits.metric_name == "test_error" and digits.initial_metric == 0.9
    nero, adam = digits.rows
    assert (nero.best, nero.best_lr, nero.ootb, nero.default_lr, nero.seeds) == pytest.approx((0.3, 0.01, 0.3, 0.01, 2))
    assert nero.best_std == pytest.approx(0.1 * SQRT2)
    assert (adam.best, adam.best_lr, adam.ootb, adam.default_lr) == pytest.approx((0.25, 0.01, 0.4, 0.001))
    # Best tuned: adam (0.25); nero (0.3) is not distinguishable from it over two paired seeds, so it is starred
    # too (test_paper_table_intervals_and_star). Best out of the box: nero (0.3 < 0.4).
    assert (nero.is_best, adam.is_best) == (True, True)
    assert (nero.is_best_ootb, adam.is_best_ootb) == (True, False)
    ppo_nero, ppo_adam = tables[1].rows
    # Higher is better: adam's 150 is the best, tuned and out of the box; one seed: no std.
    assert (ppo_nero.is_best, ppo_adam.is_best, ppo_adam.is_best_ootb) == (False, True, True)
    assert ppo_adam.best_std is None and ppo_adam.seeds == 1


def test_paper_table_intervals_and_star(known_trials: pd.DataFrame) -> None:
    (digits, _) = paper_tables(analyze_sweep(known_trials), labels=("nero", "adam"))
    nero, adam = digits.rows
    # adam 0.2, 0.3 at lr 0.01: mean 0.25, 95% t-interval 0.25 ± t(0.975, 1) 0.0707 / sqrt(2), t = 12.7062.
    assert (adam.ci_low, adam.ci_high) == pytest.approx((0.25 - 12.706204736174698 * 0.05, 0.25 + 12.7062047 * 0.05))
    # digits: 357 test images, one run's binomial SE at 25% error
    assert adam.binomial_se == pytest.approx((0.25 * 0.75 / 357) ** 0.5)
    # nero 0.2, 0.4 vs adam 0.2, 0.3 paired by seed: differences 0, 0.1 -> not distinguishable with 2 seeds.
    assert "not distinguishable" in nero.comparison and nero.is_best and adam.is_best


def test_robustness_rows(known_trials: pd.DataFrame) -> None:
    rows = robustness_rows(analyze_sweep(known_trials), labels=("nero", "adam"))
    assert [(r.task, r.label) for r in rows] == [
        ("digits-mlp", "nero"),
        ("digits-mlp", "adam"),
        ("ppo-cartpole", "nero"),
        ("ppo-cartpole", "adam"),
    ]
    nero = rows[0]
    # ootb regret, normalised: (0.3 - 0.25) / (0.9 - 0.25); lr sensitivity on the lrs common to nero and adam
    # (0.001, 0.01, 0.1; adam's lr 1 only failed): mean(0.6, 0.3, 0.85) - 0.3 = 0.85 / 3. Cost ratio 0.3 / 0.25.
    assert nero.ootb_regret == pytest.approx(0.05 / 0.65)
    assert nero.lr_sensitivity == pytest.approx(0.85 / 3)
    assert nero.tuned_ratio == pytest.approx(1.2)
    # Good window: only eta* itself is within 0.1 (m0 - best) = 0.06 of best (0.6 and 0.85 are not): one point of a
    # grid one decade apart = 1 decade. Out of the box (default lr = eta*): the same ratio as tuned.
    assert nero.good_window == pytest.approx(1.0)
    assert nero.ootb_ratio == pytest.approx(1.2)
    adam = rows[1]
    # adam's out-of-the-box 0.4: ratio 0.4 / 0.25 = 1.6; tuned it is the best of all: 1.
    assert (adam.ootb_ratio, adam.tuned_ratio) == pytest.approx((1.6, 1.0))
    assert adam.ootb_regret == pytest.approx((0.4 - 0.25) / 0.65)
    ppo_nero = rows[2]
    # ppo-cartpole (higher is better): nero 100 at its default lr 0.01, best of all 150, m0 10: regret
    # (150 - 100) / (150 - 10), gain ratio (10 - 150) / (10 - 100) = 1.556.
    assert ppo_nero.ootb_regret == pytest.approx(50 / 140)
    assert ppo_nero.ootb_ratio == pytest.approx(140 / 90)


def test_a_ratio_that_never_beat_chance_stays_infinite() -> None:
    # sgd never beats chance (0.9) on digits-mlp, adam does: sgd's ratio is infinite, not "no number".
    rows = [("sgd", 0.1, "diverged", math.nan), ("sgd", 0.01, "succeeded", 0.95), ("adam", 0.001, "succeeded", 0.3)]
    frame = pd.DataFrame(
        [
            {
                "task": "digits-mlp",
                "optimizer": label,
                "label": label,
                "lr": lr,
                "seed": 0,
                "status": status,
                "metric": metric,
                "initial_metric": 0.9,
                "metric_name": "test_error",
                "lower_is_better": True,
            }
            for label, lr, status, metric in rows
        ]
    )
    sgd = next(row for row in robustness_rows(analyze_sweep(frame)) if row.label == "sgd")
    assert sgd.tuned_ratio == math.inf and sgd.ootb_ratio == math.inf


def test_profile_score_rows(known_trials: pd.DataFrame) -> None:
    scores = profile_score_rows(analyze_sweep(known_trials))
    assert [s.label for s in scores] == ["nero", "adam"]
    # See test_performance_profiles: nero 0.874 both ways; adam 0.9 out of the box, 1 tuned.
    assert scores[0].ootb_score == pytest.approx((4 - 1.2 + 4 - 140 / 90) / 6)
    assert scores[0].tuned_score == pytest.approx(scores[0].ootb_score)
    assert (scores[1].ootb_score, scores[1].tuned_score) == pytest.approx((5.4 / 6, 1.0))


def test_no_finished_trials_give_no_rows() -> None:
    empty = analyze_sweep([])
    assert paper_tables(empty) == () and robustness_rows(empty) == () and profile_score_rows(empty) == ()
