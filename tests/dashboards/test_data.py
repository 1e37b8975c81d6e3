"""Figure data prep on the known sweep of conftest.py: every expected number is worked out by hand below."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboards import data
from nero_study.study.analysis import analyze_sweep

SQRT2 = math.sqrt(2.0)


def series(info: data.LrSensitivityInfo, task: str, label: str) -> data.LrSeries:
    panel = next(p for p in info.panels if p.task == task)
    return next(s for s in panel.series if s.label == label)


def test_lr_sensitivity_means_and_stds_over_finite_seeds(known_trials: pd.DataFrame) -> None:
    info = data.lr_sensitivity_info(known_trials, labels=("nero", "adam"))
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
    info = data.lr_sensitivity_info(known_trials)
    panel = info.panels[0]
    # Top of the finite range of digits-mlp: max over mean + std = max(0.6 + 0.141, 0.3 + 0.141, 0.8,
    # 0.4 + 0.071, 0.25 + 0.071, 0.6 + 0) = 0.8.
    assert panel.top == pytest.approx(0.8)
    assert not panel.log_metric  # 0.8 / (0.25 - 0.07) < 20
    nero = series(info, "digits-mlp", "nero")
    # nero's default lr is 0.01 (mean 0.3), and its best (analysis: m = 0.6, 0.3, 0.85, 0.9) is 0.01 too.
    assert nero.default_marker is not None and nero.best_marker is not None
    assert (nero.default_marker.x, nero.default_marker.value) == pytest.approx((0.01, 0.3))
    assert (nero.best_marker.x, nero.best_marker.value) == pytest.approx((0.01, 0.3))
    adam = series(info, "digits-mlp", "adam")
    # adam's default lr is 0.001 (0.4); best 0.01 (0.25).
    assert (adam.default_marker.x, adam.default_marker.value) == pytest.approx((0.001, 0.4))
    assert (adam.best_marker.x, adam.best_marker.value) == pytest.approx((0.01, 0.25))
    # Diverged/failed marks: nero at 0.1 (1 diverged) and 1.0 (2 diverged); adam at 1.0 (2 failed); all at the top.
    assert [m.lr for m in nero.diverged_markers] == [0.1, 1.0]
    assert [m.lr for m in adam.diverged_markers] == [1.0]
    assert all(m.value == panel.top for m in (*nero.diverged_markers, *adam.diverged_markers))
    # Two optimisers at lr 1.0 are spread apart (a few percent), each on its side of 1.0; a lone one is not.
    nero_at_1, adam_at_1 = nero.diverged_markers[1].x, adam.diverged_markers[0].x
    assert nero_at_1 < 1.0 < adam_at_1
    assert nero_at_1 == pytest.approx(1.0, rel=0.1) and adam_at_1 == pytest.approx(1.0, rel=0.1)
    assert nero.diverged_markers[0].x == 0.1
    assert "2 diverged" in nero.diverged_markers[1].text and "2 failed" in adam.diverged_markers[0].text


def test_lr_sensitivity_higher_is_better_task(known_trials: pd.DataFrame) -> None:
    info = data.lr_sensitivity_info(known_trials)
    panel = info.panels[1]
    assert panel.task == "ppo-cartpole" and not panel.lower_is_better
    assert panel.top == pytest.approx(150.0)
    adam = series(info, "ppo-cartpole", "adam")
    # Returns: adam 150 at 0.001 (its default lr) beats 20 at 0.01: best and default both at 0.001.
    assert (adam.best_marker.x, adam.best_marker.value) == pytest.approx((0.001, 150.0))
    assert (adam.default_marker.x, adam.default_marker.value) == pytest.approx((0.001, 150.0))
    assert adam.diverged_markers == ()


def test_all_seeds_diverged_at_default_lr_marks_the_default_at_the_top() -> None:
    frame = pd.DataFrame(
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
    info = data.lr_sensitivity_info(frame)
    sgd = info.panels[0].series[0]
    # sgd's default lr is 0.1, where the only seed diverged: the diamond sits at the top (0.3), not dropped.
    assert sgd.default_marker is not None
    assert (sgd.default_marker.x, sgd.default_marker.value) == pytest.approx((0.1, 0.3))
    assert "diverged" in sgd.default_marker.text


def test_empty_and_unfinished_trials_give_a_note() -> None:
    assert data.lr_sensitivity_info(pd.DataFrame()).note == "No finished trials yet"
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
    info = data.lr_sensitivity_info(pending)
    assert info.panels == () and info.note
    empty = analyze_sweep([])
    assert data.ootb_vs_tuned_info(empty).note
    assert data.normalized_score_info(empty).note
    assert data.performance_profile_info(empty).note
    assert data.expected_best_info(empty).note
    assert data.learning_curves_info([]).note
    assert data.sweep_progress_info(pd.DataFrame()).note
    assert data.paper_tables(empty) == ()
    assert data.profile_score_rows(empty) == ()


def test_ootb_vs_tuned(known_trials: pd.DataFrame) -> None:
    info = data.ootb_vs_tuned_info(analyze_sweep(known_trials))
    digits = info.panels[0]
    bars = {bar.label: bar for bar in digits.bars}
    # nero: default lr 0.01 -> 0.3 ± 0.141 out of the box; tuned 0.3 at 0.01.
    assert (bars["nero"].ootb, bars["nero"].tuned, bars["nero"].best_lr) == pytest.approx((0.3, 0.3, 0.01))
    assert bars["nero"].ootb_std == pytest.approx(0.1 * SQRT2)
    # adam: default lr 0.001 -> 0.4 out of the box; tuned 0.25 at 0.01 (std 0.05 sqrt 2).
    assert (bars["adam"].ootb, bars["adam"].tuned) == pytest.approx((0.4, 0.25))
    assert bars["adam"].tuned_std == pytest.approx(0.05 * SQRT2)
    assert bars["adam"].ootb_diverged == 0


def test_normalized_scores(known_trials: pd.DataFrame) -> None:
    info = data.normalized_score_info(analyze_sweep(known_trials), labels=("nero", "adam"))
    assert info.tasks == ("digits-mlp", "ppo-cartpole") and info.labels == ("nero", "adam")
    # digits-mlp: m0 0.9, best of all 0.25 (adam): nero (0.9 - 0.3) / 0.65 = 0.923; adam ootb 0.5 / 0.65 = 0.769.
    assert info.ootb[0] == pytest.approx((0.6 / 0.65, 0.5 / 0.65))
    assert info.tuned[0] == pytest.approx((0.6 / 0.65, 1.0))
    # ppo-cartpole (higher is better): m0 10, best 150: nero (10 - 100) / (10 - 150) = 0.643; adam 1.
    assert info.ootb[1] == pytest.approx((90 / 140, 1.0))
    assert info.tuned[1] == pytest.approx((90 / 140, 1.0))
    assert data.normalized_score(0.5, 0.5, 0.5) is None  # nothing beat chance
    assert data.normalized_score(None, 0.9, 0.2) is None  # not run
    assert data.normalized_score(1.0, 0.9, 0.2) == pytest.approx(-0.1 / 0.7)  # worse than chance: below 0


def test_performance_profiles(known_trials: pd.DataFrame) -> None:
    info = data.performance_profile_info(analyze_sweep(known_trials))
    tuned = {curve.label: curve for curve in info.tuned}
    ootb = {curve.label: curve for curve in info.ootb}
    # Ratios (m0 - best_all) / (m0 - m): digits nero 0.65 / 0.6 = 1.0833, adam 1 (tuned), 0.65 / 0.5 = 1.3 (ootb);
    # ppo nero 140 / 90 = 1.5556, adam 1. Score = sum_t (4 - max(r, 1)) / (2 tasks * 3):
    # nero (2.9167 + 2.4444) / 6 = 0.8935 both ways; adam tuned 1, ootb (2.7 + 3) / 6 = 0.95.
    assert tuned["nero"].score == pytest.approx((4 - 0.65 / 0.6 + 4 - 140 / 90) / 6)
    assert ootb["nero"].score == pytest.approx(tuned["nero"].score)
    assert tuned["adam"].score == pytest.approx(1.0)
    assert ootb["adam"].score == pytest.approx(5.7 / 6)
    # Step points only where rho changes: nero tuned is 0 at tau 1, 0.5 from 1.09, 1 from 1.56.
    assert tuned["nero"].rho[0] == 0.0 and tuned["nero"].rho[-1] == 1.0
    assert sorted(set(tuned["nero"].rho)) == [0.0, 0.5, 1.0]
    assert len(tuned["nero"].taus) <= 5
    assert info.tasks == 2 and info.tau_max == 4.0


def test_expected_best(known_trials: pd.DataFrame) -> None:
    info = data.expected_best_info(analyze_sweep(known_trials))
    nero = next(s for s in info.panels[0].series if s.label == "nero")
    # nero's m over the grid (diverged = m0 = 0.9): 0.6, 0.3, 0.85, 0.9. k = 1: the mean, 0.6625. k = 4, sorted
    # 0.3, 0.6, 0.85, 0.9 with weights 1 - (3/4)^4, (3/4)^4 - (1/2)^4, (1/2)^4 - (1/4)^4, (1/4)^4: 0.41074.
    assert nero.ks == (1, 2, 3, 4)
    assert nero.values[0] == pytest.approx(0.6625)
    assert nero.values[3] == pytest.approx(0.4107421875)


def test_paper_tables(known_trials: pd.DataFrame) -> None:
    tables = data.paper_tables(analyze_sweep(known_trials), labels=("nero", "adam"))
    digits = tables[0]
    assert digits.task == "digits-mlp" and digits.metric_name == "test_error" and digits.initial_metric == 0.9
    nero, adam = digits.rows
    assert (nero.best, nero.best_lr, nero.ootb, nero.default_lr, nero.seeds) == pytest.approx((0.3, 0.01, 0.3, 0.01, 2))
    assert nero.best_std == pytest.approx(0.1 * SQRT2)
    assert (adam.best, adam.best_lr, adam.ootb, adam.default_lr) == pytest.approx((0.25, 0.01, 0.4, 0.001))
    # Best tuned: adam (0.25); best out of the box: nero (0.3 < 0.4).
    assert (nero.is_best, adam.is_best) == (False, True)
    assert (nero.is_best_ootb, adam.is_best_ootb) == (True, False)
    ppo_nero, ppo_adam = tables[1].rows
    # Higher is better: adam's 150 is the best, tuned and out of the box; one seed: no std.
    assert (ppo_nero.is_best, ppo_adam.is_best, ppo_adam.is_best_ootb) == (False, True, True)
    assert ppo_adam.best_std is None and ppo_adam.seeds == 1


def test_robustness_rows(known_trials: pd.DataFrame) -> None:
    rows = data.robustness_rows(analyze_sweep(known_trials), labels=("nero", "adam"))
    assert [(r.task, r.label) for r in rows] == [
        ("digits-mlp", "nero"),
        ("digits-mlp", "adam"),
        ("ppo-cartpole", "nero"),
        ("ppo-cartpole", "adam"),
    ]
    nero = rows[0]
    # ootb regret (0.3 - 0.25) / 0.25 = 0.2; lr sensitivity mean(0.6, 0.3, 0.85, 0.9) - 0.3 = 0.3625.
    assert nero.ootb_regret == pytest.approx(0.2)
    assert nero.lr_sensitivity == pytest.approx(0.3625)
    assert nero.tuned_ratio == pytest.approx(0.65 / 0.6)
    scores = data.profile_score_rows(analyze_sweep(known_trials))
    assert [s.label for s in scores] == ["nero", "adam"]
    assert scores[1].tuned_score == pytest.approx(1.0)


def test_optimizer_colors_are_fixed_and_distinct() -> None:
    colors = data.optimizer_colors(["adam", "nero", "nero-unconstrained", "my-variant"])
    assert colors["nero"] == data.KNOWN_OPTIMIZER_COLORS["nero"]
    assert colors["adam"] == data.KNOWN_OPTIMIZER_COLORS["adam"]
    assert len(set(colors.values())) == 4
    # The same label keeps its colour whatever the order (and so on every figure and page).
    again = data.optimizer_colors(["my-variant", "nero-unconstrained", "nero", "adam"])
    assert again == colors


def test_downsample_keeps_ends_extremes_and_nonfinite() -> None:
    values: list[float | None] = [math.sin(i / 20.0) for i in range(1000)]
    values[500] = -10.0  # the global minimum
    values[700] = 10.0  # the global maximum
    values[900] = math.nan  # where a run diverged
    values[950] = None  # never reported: missing
    kept = data.downsample_indices(values, max_points=200)
    assert len(kept) <= 200
    assert {0, 999, 500, 700, 900} <= set(kept)
    assert list(kept) == sorted(kept)
    assert data.downsample_indices([1.0, 2.0, 3.0], max_points=200) == (0, 1, 2)


def test_learning_curves_downsampled_with_divergence_marks() -> None:
    curve = [{"step": step, "metric": 1.0 / (1 + step), "train_loss": 2.0 - step / 1000} for step in range(1000)]
    curve[-1] = {"step": 999, "metric": 0.5, "train_loss": math.nan}
    trial = {"id": 7, "task": "digits-mlp", "label": "nero", "lr": 0.01, "seed": 0, "metric_name": "test_error"}
    info = data.learning_curves_info([(trial, curve)])
    row = info.rows[0]
    assert row.metric.title == "digits-mlp: test_error"
    metric, loss = row.metric.series[0], row.train_loss.series[0]
    assert len(metric.steps) <= data.MAX_CURVE_POINTS and len(loss.steps) <= data.MAX_CURVE_POINTS
    assert metric.steps[0] == 0 and metric.steps[-1] == 999
    assert metric.values[0] == pytest.approx(1.0)
    assert loss.diverged_steps == (999,) and loss.values[-1] is None
    assert row.train_loss.top == pytest.approx(2.0)
    assert metric.name == "nero lr=0.01 seed 0" and metric.trial_id == 7
    assert metric.diverged_steps == ()


def test_learning_curves_leading_nan_is_not_divergence_and_a_stopped_run_is_marked() -> None:
    # The training loss is NaN at step 0 (nothing trained yet); this run diverged and was stopped at step 20
    # with finite values: its last step is marked, the leading NaN is dropped.
    curve = [
        {"step": 0, "metric": 0.9, "train_loss": math.nan},
        {"step": 10, "metric": 0.5, "train_loss": 1.0},
        {"step": 20, "metric": 0.7, "train_loss": 3.0},
    ]
    trial = {"id": 1, "task": "digits-mlp", "label": "sgd", "lr": 1.0, "seed": 0, "status": "diverged"}
    row = data.learning_curves_info([(trial, curve)]).rows[0]
    loss = row.train_loss.series[0]
    assert loss.steps == (10, 20) and loss.values == (1.0, 3.0)
    assert loss.diverged_steps == (20,)
    assert row.metric.series[0].diverged_steps == (20,)
    succeeded = data.learning_curves_info([({**trial, "status": "succeeded"}, curve)]).rows[0]
    assert succeeded.train_loss.series[0].diverged_steps == ()


def test_sweep_progress_over_time() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else t0 + timedelta(seconds=seconds)

    # A: created 0, started 10, succeeded 20. B: created 0, started 15, running. C: created 5, pending.
    # D: created 0, cancelled at 12 without starting.
    trials = pd.DataFrame(
        [
            {"status": "succeeded", "created_at": at(0), "started_at": at(10), "finished_at": at(20)},
            {"status": "running", "created_at": at(0), "started_at": at(15), "finished_at": at(None)},
            {"status": "pending", "created_at": at(5), "started_at": at(None), "finished_at": at(None)},
            {"status": "cancelled", "created_at": at(0), "started_at": at(None), "finished_at": at(12)},
        ]
    )
    info = data.sweep_progress_info(trials)
    assert info.times == tuple(at(s) for s in (0, 5, 10, 12, 15, 20))
    assert info.counts["pending"] == (3, 4, 3, 2, 1, 1)
    assert info.counts["running"] == (0, 0, 1, 1, 2, 1)
    assert info.counts["cancelled"] == (0, 0, 0, 1, 1, 1)
    assert info.counts["succeeded"] == (0, 0, 0, 0, 0, 1)
    assert info.total == 4
    sampled = data.sweep_progress_info(trials, max_points=3)
    assert len(sampled.times) == 3 and sampled.times[0] == at(0) and sampled.times[-1] == at(20)


def test_progress_bar() -> None:
    counts = {"succeeded": 3, "diverged": 1, "failed": 0, "running": 1, "pending": 5, "cancelled": 0}
    bar = data.progress_bar(counts, planned=12)
    # 12 planned (more than the 10 stored): 4 done = 33.3%; segments for the non-empty statuses but pending.
    assert (bar.total, bar.done) == (12, 4)
    assert bar.percent_done == pytest.approx(100 / 3)
    assert [(s.status, s.count) for s in bar.segments] == [("succeeded", 3), ("diverged", 1), ("running", 1)]
    assert bar.segments[0].percent == pytest.approx(25.0)
    assert data.progress_bar({}, planned=None).percent_done == 0.0
