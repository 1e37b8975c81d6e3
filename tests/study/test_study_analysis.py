"""Robustness metrics against values computed by hand on small fixtures.

Fixture (two tasks, three optimisers):

Task A: test error, lower is better, initial metric 0.9 (median of the trials' initial metrics), so m0 = 0.9.
  sgd  (default lr 0.1), seeds 0 and 1:
    lr 0.001: 0.50, 0.70  -> m = 0.60
    lr 0.01 : 0.16, 0.18  -> m = 0.17
    lr 0.1  : 0.10, 0.14  -> m = 0.12   <- best, and the default lr
    lr 1    : diverged x2 -> m = 0.90 (m0)
  adam (default lr 0.001), seeds 0 and 1:
    lr 0.001: 0.30, 0.30          -> m = 0.30   (out of the box)
    lr 0.01 : 0.08, 0.12          -> m = 0.10   <- best; best_all(A) = 0.10
    lr 0.1  : 0.40, diverged      -> m = (0.40 + 0.90) / 2 = 0.65
    lr 1    : 0.95, diverged      -> m = (0.95 + 0.90) / 2 = 0.925 (worse than chance)
  lamb (default lr 0.01), seed 0: every lr of the grid diverged -> m = 0.90 everywhere.

Task B: episode return, higher is better, initial metric 10, seed 0 only.
  sgd  (default 0.1): lr 0.01 -> 50, lr 0.1 -> 100 (best), lr 1 -> diverged (counts as 10)
  adam (default 0.001): lr 0.001 -> 200 (best; best_all(B) = 200), lr 0.01 -> 170, lr 0.1 -> 20
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from nero_study.study.analysis import (
    analyze_sweep,
    expected_best_of_k,
    paper_table,
    performance_ratio,
    profile_score,
)
from nero_study.tasks.base import TrialResult, TrialSpec

DEFAULT_LR = {"sgd": 0.1, "adam": 0.001, "lamb": 0.01, "nero": 0.01}


def trial(task, optimizer, lr, seed, metric, *, status="succeeded", lower=True, initial=0.9):
    return {
        "task": task,
        "label": optimizer,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        "status": status,
        "metric": metric,
        "lower_is_better": lower,
        "metric_name": "test error" if lower else "episode return",
        "initial_metric": initial,
        "default_lr": DEFAULT_LR[optimizer],
    }


def diverged(task, optimizer, lr, seed, *, lower=True, initial=0.9):
    return trial(task, optimizer, lr, seed, math.nan, status="diverged", lower=lower, initial=initial)


def task_a() -> list[dict]:
    rows = [
        trial("A", "sgd", 0.001, 0, 0.50), trial("A", "sgd", 0.001, 1, 0.70),
        trial("A", "sgd", 0.01, 0, 0.16), trial("A", "sgd", 0.01, 1, 0.18),
        trial("A", "sgd", 0.1, 0, 0.10), trial("A", "sgd", 0.1, 1, 0.14),
        diverged("A", "sgd", 1.0, 0), diverged("A", "sgd", 1.0, 1),
        trial("A", "adam", 0.001, 0, 0.30), trial("A", "adam", 0.001, 1, 0.30),
        trial("A", "adam", 0.01, 0, 0.08), trial("A", "adam", 0.01, 1, 0.12),
        trial("A", "adam", 0.1, 0, 0.40), diverged("A", "adam", 0.1, 1),
        trial("A", "adam", 1.0, 0, 0.95), diverged("A", "adam", 1.0, 1),
        diverged("A", "lamb", 0.001, 0), diverged("A", "lamb", 0.01, 0), diverged("A", "lamb", 0.1, 0),
        diverged("A", "lamb", 1.0, 0),
    ]
    # Spread in the initial metrics; their median stays 0.9.
    rows[0]["initial_metric"], rows[1]["initial_metric"] = 0.92, 0.88
    return rows


def task_b() -> list[dict]:
    def b(optimizer, lr, metric):
        return trial("B", optimizer, lr, 0, metric, lower=False, initial=10.0)

    return [
        b("sgd", 0.01, 50.0), b("sgd", 0.1, 100.0), diverged("B", "sgd", 1.0, 0, lower=False, initial=10.0),
        b("adam", 0.001, 200.0), b("adam", 0.01, 170.0), b("adam", 0.1, 20.0),
    ]


def fixture() -> list[dict]:
    # Unfinished trials are ignored.
    pending = {**trial("A", "sgd", 0.1, 5, 0.0), "status": "pending"}
    cancelled = {**trial("B", "adam", 0.001, 5, 9999.0, lower=False), "status": "cancelled"}
    return [*task_a(), *task_b(), pending, cancelled]


def test_task_a_lower_is_better_metrics():
    analysis = analyze_sweep(fixture())
    sgd = analysis.summary("A", "sgd")
    assert sgd.initial_metric == pytest.approx(0.9)
    assert [p.lr for p in sgd.curve] == [0.001, 0.01, 0.1, 1.0]
    assert [p.mean for p in sgd.curve] == pytest.approx([0.60, 0.17, 0.12, 0.90])
    assert [p.diverged for p in sgd.curve] == [0, 0, 0, 2]
    assert sgd.best == pytest.approx(0.12)
    assert sgd.eta_star == 0.1
    assert sgd.best_std == pytest.approx(0.04 / math.sqrt(2))  # sample std of 0.10, 0.14
    assert sgd.best_seeds == 2
    assert sgd.ootb == pytest.approx(0.12)
    assert sgd.ootb_regret == pytest.approx(0.025)  # normalised: (0.12 - 0.10) / (0.9 - 0.10)
    # mean of [0.60-0.12, 0.17-0.12, 0, 0.90-0.12] = (0.48 + 0.05 + 0 + 0.78) / 4
    assert sgd.lr_sensitivity == pytest.approx(1.31 / 4)
    # threshold 0.1 * (0.9 - 0.12) = 0.078: lr 0.01 (0.05 above best) is in, 0.001 and 1 are out -> 2 decades
    assert sgd.good_window == pytest.approx(2.0)

    adam = analysis.summary("A", "adam")
    assert [p.mean for p in adam.curve] == pytest.approx([0.30, 0.10, 0.65, 0.925])
    assert [p.diverged for p in adam.curve] == [0, 0, 1, 1]
    assert adam.best == pytest.approx(0.10) and adam.eta_star == 0.01
    assert adam.ootb == pytest.approx(0.30)
    assert adam.ootb_regret == pytest.approx(0.25)  # (0.30 - 0.10) / (0.9 - 0.10)
    # the shortfall at lr 1 is capped at chance: min(0.925, 0.9) - 0.10 = 0.80
    assert adam.lr_sensitivity == pytest.approx((0.20 + 0 + 0.55 + 0.80) / 4)
    assert adam.good_window_lrs == (0.01, 0.01) and sgd.good_window_lrs == (0.01, 0.1)
    assert adam.good_window == pytest.approx(1.0)  # threshold 0.08; neighbours 0.20 and 0.55 above

    lamb = analysis.summary("A", "lamb")
    assert lamb.best == pytest.approx(0.9) and lamb.eta_star == 0.001  # tie at m0: the smaller lr
    assert math.isnan(lamb.best_std)  # one seed
    assert lamb.ootb_regret == pytest.approx(1.0)  # at chance: (0.9 - 0.1) / (0.9 - 0.1)
    assert lamb.lr_sensitivity == pytest.approx(0.0)
    assert lamb.good_window == 0.0  # never better than chance

    task = next(t for t in analysis.tasks if t.task == "A")
    assert task.best_all == pytest.approx(0.10) and task.best_label == "adam"


def test_task_b_higher_is_better_reported_in_its_own_orientation():
    analysis = analyze_sweep(fixture())
    sgd = analysis.summary("B", "sgd")
    assert not sgd.lower_is_better
    assert sgd.initial_metric == pytest.approx(10.0)
    assert [p.mean for p in sgd.curve] == pytest.approx([50.0, 100.0, 10.0])  # diverged counts as 10
    assert sgd.best == pytest.approx(100.0) and sgd.eta_star == 0.1
    assert sgd.ootb == pytest.approx(100.0)
    assert sgd.ootb_regret == pytest.approx(100 / 190)  # (200 - 100) / (200 - 10)
    # Grid metrics on the lrs common to sgd and adam on B: 0.01 and 0.1. sgd there: 50, 100 (best 100).
    assert next(t for t in analysis.tasks if t.task == "B").common_grid == (0.01, 0.1)
    assert sgd.lr_sensitivity == pytest.approx(50 / 2)  # shortfalls [50, 0]
    assert sgd.good_window == pytest.approx(1.0)  # threshold 0.1 * (100 - 10) = 9: one point, one decade
    assert sgd.grid_metrics_note == "on the 2 learning rates common to all optimisers"

    adam = analysis.summary("B", "adam")
    assert adam.best == pytest.approx(200.0) and adam.eta_star == 0.001
    assert adam.ootb == pytest.approx(200.0) and adam.ootb_regret == pytest.approx(0.0)
    # on the common grid adam has 170 (lr 0.01) and 20 (lr 0.1): best there 170
    assert adam.lr_sensitivity == pytest.approx((0 + 150) / 2)
    assert adam.good_window == pytest.approx(1.0)  # threshold 0.1 * (170 - 10) = 16: 20 is out
    # k = 1: the mean (170 + 20) / 2; reported as a return, so higher is better
    assert adam.expected_best[0] == pytest.approx(95.0)
    # k = 2 (sorted best first 170, 20): weights (1 - 1/4, 1/4)
    assert adam.expected_best[1] == pytest.approx(170 * 0.75 + 20 * 0.25)

    task = next(t for t in analysis.tasks if t.task == "B")
    assert task.best_all == pytest.approx(200.0) and task.best_label == "adam"


def test_expected_best_exact_values():
    sgd = analyze_sweep(fixture()).summary("A", "sgd")
    # sorted m = 0.12, 0.17, 0.60, 0.90 (n = 4)
    assert len(sgd.expected_best) == 4
    assert sgd.expected_best[0] == pytest.approx(1.79 / 4)  # k = 1: the mean
    # k = 2: P(min >= i-th) = ((4 - i) / 4)^2 -> weights (16-9, 9-4, 4-1, 1) / 16 = (7, 5, 3, 1) / 16
    assert sgd.expected_best[1] == pytest.approx((0.12 * 7 + 0.17 * 5 + 0.60 * 3 + 0.90) / 16)
    # k = 4: weights (256-81, 81-16, 16-1, 1) / 256 = (175, 65, 15, 1) / 256
    assert sgd.expected_best[3] == pytest.approx((0.12 * 175 + 0.17 * 65 + 0.60 * 15 + 0.90) / 256)


def test_expected_best_of_k_limits():
    values = [0.7, 0.2, 0.9, 0.4, 0.4]
    assert expected_best_of_k(values, 1) == pytest.approx(np.mean(values))
    assert expected_best_of_k(values, 500) == pytest.approx(0.2, abs=1e-12)
    curve = [expected_best_of_k(values, k) for k in range(1, 30)]
    assert all(a >= b for a, b in zip(curve, curve[1:], strict=False))  # more draws never hurt
    # Against brute force over all 5^2 ordered pairs of draws.
    pairs = [min(a, b) for a in values for b in values]
    assert expected_best_of_k(values, 2) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError, match="Invalid k: 0"):
        expected_best_of_k(values, 0)


def test_performance_profiles_on_two_tasks():
    analysis = analyze_sweep(fixture())
    tuned, ootb = analysis.profiles["tuned"], analysis.profiles["ootb"]
    assert tuned.tasks == ("A", "B") and tuned.labels == ("sgd", "adam", "lamb")
    # tuned: A is an error (cost ratio) r_A(sgd) = 0.12 / 0.10 = 1.2; B is a return (gain ratio over chance)
    # r_B(sgd) = (200 - 10) / (100 - 10) = 19/9
    assert tuned.ratio_kinds == {"A": "cost ratio", "B": "gain ratio"}
    assert tuned.ratios["sgd"]["A"] == pytest.approx(1.2)
    assert tuned.ratios["sgd"]["B"] == pytest.approx(19 / 9)
    assert tuned.ratios["adam"] == pytest.approx({"A": 1.0, "B": 1.0})
    assert tuned.ratios["lamb"] == {"A": math.inf, "B": math.inf}  # no improvement on A, not run on B
    # score = sum_t max(0, 4 - r_t) / (2 tasks * 3): sgd (4 - 1.2 + 4 - 19/9) / 6
    assert tuned.scores["sgd"] == pytest.approx((4 - 1.2 + 4 - 19 / 9) / 6)
    assert tuned.scores["adam"] == pytest.approx(1.0)
    assert tuned.scores["lamb"] == 0.0
    # rho: sgd has no task at tau = 1, one of two at 1.5, both at 2.5
    def rho_at(label: str, tau: float) -> float:
        return tuned.rho[label][int(np.argmin(np.abs(np.asarray(tuned.taus) - tau)))]

    assert tuned.taus[0] == 1.0 and tuned.taus[-1] == 4.0
    assert rho_at("sgd", 1.0) == 0.0 and rho_at("sgd", 1.5) == 0.5 and rho_at("sgd", 2.5) == 1.0
    assert tuned.rho["adam"][0] == 1.0

    # out of the box: adam's A uses lr 0.001 (0.30): r = 0.30 / 0.10 = 3; B uses its best (r = 1)
    assert ootb.ratios["adam"] == pytest.approx({"A": 3.0, "B": 1.0})
    assert ootb.scores["adam"] == pytest.approx((4 - 3 + 3) / 6)
    assert ootb.scores["sgd"] == pytest.approx(tuned.scores["sgd"])  # sgd's default lr is its best on both


def test_profile_helpers():
    assert performance_ratio(0.5, 0.5, 0.1) == math.inf  # no improvement over chance
    assert performance_ratio(math.nan, 0.9, 0.1) == math.inf
    assert performance_ratio(0.3, 0.9, 0.1) == pytest.approx(0.8 / 0.6)  # gain ratio
    assert performance_ratio(0.3, 0.9, 0.1, "cost ratio") == pytest.approx(3.0)
    assert performance_ratio(0.95, 0.9, 0.1, "cost ratio") == math.inf  # worse than chance: a failure
    with pytest.raises(ValueError, match="Invalid ratio kind"):
        performance_ratio(0.3, 0.9, 0.1, "ratio")
    # r = 1 covers all of [1, 4]; r = 2.5 covers half; r = 5 none -> (3 + 1.5 + 0) / (3 * 3)
    assert profile_score([1.0, 2.5, 5.0]) == pytest.approx(4.5 / 9)
    # Exact score agrees with averaging rho over a fine tau grid.
    ratios = [1.0, 1.7, 3.2, math.inf]
    taus = np.linspace(1, 4, 30001)
    rho = [np.mean([r <= tau for r in ratios]) for tau in taus]
    assert profile_score(ratios) == pytest.approx(np.trapezoid(rho, taus) / 3, abs=1e-4)


def test_chance_override_changes_m0():
    analysis = analyze_sweep(task_a(), chance={"A": 1.0})
    sgd = analysis.summary("A", "sgd")
    assert sgd.initial_metric == 1.0
    assert sgd.curve[-1].mean == pytest.approx(1.0)  # diverged lr now counts as 1.0
    assert sgd.lr_sensitivity == pytest.approx((0.48 + 0.05 + 0 + 0.88) / 4)


def test_dataframe_input_gives_the_same_analysis():
    records = fixture()
    from_records = analyze_sweep(records).summary_frame()
    from_frame = analyze_sweep(pd.DataFrame(records)).summary_frame()
    pd.testing.assert_frame_equal(from_records, from_frame)
    assert len(from_frame) == 5  # A: sgd, adam, lamb; B: sgd, adam
    row = from_frame[(from_frame.task == "B") & (from_frame.label == "sgd")].iloc[0]
    assert row.best == pytest.approx(100.0) and row.tuned_ratio == pytest.approx(19 / 9)  # B: gain ratio


def test_to_dict_is_json_safe():
    data = analyze_sweep(fixture()).to_dict()
    text = json.dumps(data, allow_nan=False)
    lamb = next(s for s in data["per_optimizer"] if s["task"] == "A" and s["label"] == "lamb")
    assert lamb["best_std"] is None  # NaN: one seed
    assert data["profiles"]["tuned"]["ratios"]["lamb"]["A"] is None  # unbounded ratio: null, valid JSON
    assert json.loads(text)["tasks"][1]["best_all"] == 200.0


def test_paper_table_rows():
    rows = paper_table(analyze_sweep(fixture()))
    sgd_a = next(r for r in rows if r.task == "A" and r.label == "sgd")
    assert sgd_a.best == pytest.approx(0.12) and sgd_a.best_std == pytest.approx(0.0282843, rel=1e-5)
    assert sgd_a.eta_star == 0.1 and sgd_a.ootb == pytest.approx(0.12) and sgd_a.seeds == 2
    assert sgd_a.metric_name == "test error" and sgd_a.default_lr == 0.1
    assert sgd_a.text == "0.12 ± 0.028"
    adam_a = next(r for r in rows if r.task == "A" and r.label == "adam")
    assert adam_a.eta_star == 0.01 and adam_a.ootb == pytest.approx(0.30)
    adam_b = next(r for r in rows if r.task == "B" and r.label == "adam")
    assert adam_b.text == "200" and adam_b.to_dict()["best_std"] is None


def test_irregular_grid_uses_the_median_spacing():
    # Grid 1e-3, 1e-2, 3e-2 (an off-grid default), 1e-1: log gaps 1, 0.477, 0.523 -> median 0.523 decades.
    rows = [trial("A", "lamb", lr, 0, m) for lr, m in [(1e-3, 0.8), (1e-2, 0.2), (3e-2, 0.21), (1e-1, 0.22)]]
    summary = analyze_sweep(rows).summary("A", "lamb")
    # m0 = 0.9, best = 0.2, threshold 0.07: 0.21 and 0.22 are in, 0.8 is out -> 3 points
    spacing = math.log10(1e-1) - math.log10(3e-2)
    assert summary.good_window == pytest.approx(3 * spacing)


def test_trial_results_and_registry_default_lr():
    def result(lr, metric):
        spec = TrialSpec(task="digits-mlp", optimizer="adam", lr=lr)
        return TrialResult(spec, "succeeded", metric, metric, 0.9, "test error", True, [], 1.0, "cpu")

    summary = analyze_sweep([result(1e-3, 0.3), result(1e-2, 0.2)]).summary("digits-mlp", "adam")
    assert summary.default_lr == 0.001 and summary.ootb == pytest.approx(0.3)


def test_empty_and_malformed_input():
    empty = analyze_sweep([])
    assert empty.per_optimizer == () and empty.summary_frame().empty
    with pytest.raises(ValueError, match="lacks status"):
        analyze_sweep([{"task": "A", "label": "sgd", "lr": 0.1, "metric": 0.2, "lower_is_better": True}])
    mixed = [trial("A", "sgd", 0.1, 0, 0.2), trial("A", "sgd", 0.01, 0, 0.3, lower=False)]
    with pytest.raises(ValueError, match="different lower_is_better"):
        analyze_sweep(mixed)
    # A failed trial without an orientation does not change its task's (higher is better, from task B's
    # trials); it is left out of the mean and counted.
    unknown = {**trial("B", "sgd", 1.0, 1, math.nan, status="failed"), "lower_is_better": None}
    sgd_b = analyze_sweep([*task_b(), unknown]).summary("B", "sgd")
    assert sgd_b.lower_is_better is False and sgd_b.curve[-1].seeds == 1 and sgd_b.curve[-1].mean == 10.0
    assert sgd_b.curve[-1].failed == 1 and sgd_b.failed == 1
    with pytest.raises(KeyError, match="No trials for optimizer 'nero'"):
        analyze_sweep(task_a()).summary("A", "nero")


# --- issue 15: defects reproduced against numbers worked out by hand ----------------------------------


def one_point(task, label, metric, *, lower=True, initial=0.9, lr=0.01, seed=0, status="succeeded", name=None):
    return {
        "task": task, "label": label, "optimizer": label, "lr": lr, "seed": seed, "status": status,
        "metric": metric, "lower_is_better": lower, "metric_name": name or ("error" if lower else "return"),
        "initial_metric": initial, "default_lr": lr,
    }


def test_tuned_profile_is_the_dolan_more_cost_ratio_for_positive_lower_is_better_metrics():
    # The paper's translation perplexities: SGD 92.4, Nero 11.35; chance is the vocabulary size (~ 30k).
    rows = [
        one_point("translation", "nero", 11.35, initial=30000.0),
        one_point("translation", "sgd", 92.4, initial=30000.0),
    ]
    tuned = analyze_sweep(rows).profiles["tuned"]
    assert tuned.ratios["sgd"]["translation"] == pytest.approx(92.4 / 11.35, rel=1e-12)  # ~8.14, not 1.003
    assert tuned.ratios["nero"]["translation"] == 1.0
    assert tuned.scores["sgd"] == 0.0  # 8.14 > tau_max = 4: no credit at any tau in [1, 4]
    assert tuned.ratio_kinds["translation"] == "cost ratio"


def test_profile_of_a_reward_that_crosses_zero_is_the_ratio_of_gains_over_chance():
    # Pong-like returns: chance -21, best 20, another optimiser 0. Gains over chance 41 and 21.
    rows = [
        one_point("pong", "nero", 20.0, lower=False, initial=-21.0),
        one_point("pong", "sgd", 0.0, lower=False, initial=-21.0),
    ]
    tuned = analyze_sweep(rows).profiles["tuned"]
    assert tuned.ratios["sgd"]["pong"] == pytest.approx(41 / 21, rel=1e-12)
    assert tuned.ratio_kinds["pong"] == "gain ratio"


def test_ootb_regret_is_on_the_normalised_scale():
    # Pong-like: chance -21, the best (nero) reaches 20, sgd's default lr reaches 0.
    rows = [
        one_point("pong", "nero", 20.0, lower=False, initial=-21.0),
        one_point("pong", "sgd", 0.0, lower=False, initial=-21.0),
    ]
    sgd = analyze_sweep(rows).summary("pong", "sgd")
    assert sgd.ootb_regret == pytest.approx(20 / 41, rel=1e-12)  # 1 - normalised score (0 - -21) / 41
    # Shifting the other optimiser's reward by +1 moves the regret a little, not by a factor.
    rows[0]["metric"] = 21.0
    assert analyze_sweep(rows).summary("pong", "sgd").ootb_regret == pytest.approx(21 / 42, rel=1e-12)


def test_failed_trials_are_left_out_and_counted():
    rows = [*task_a(), {**diverged("A", "adam", 0.01, 2), "status": "failed"}]
    analysis = analyze_sweep(rows)
    adam = analysis.summary("A", "adam")
    point = next(p for p in adam.curve if p.lr == 0.01)
    assert point.mean == pytest.approx(0.10) and point.seeds == 2 and point.failed == 1 and point.diverged == 0
    assert adam.best == pytest.approx(0.10) and adam.best_seeds == 2 and adam.failed == 1
    assert analysis.failed_trials == 1 and analysis.to_dict()["failed_trials"] == 1
    # A pair whose trials all failed has no summary, but its failures are counted.
    only_failed = analyze_sweep([*task_a(), {**diverged("A", "nero", 0.01, 0), "status": "failed"}])
    assert only_failed.failed_trials == 1
    assert "nero" not in {s.label for s in only_failed.per_optimizer}


def paper_row(label, lr, seed, metric, phase):
    return {**one_point("A", label, metric, lr=lr, seed=seed), "phase": phase, "default_lr": 0.1}


def test_paper_protocol_keeps_the_lr_chosen_at_the_first_seed():
    # Phase 1 (seed 0): lr 0.01 -> 0.20, lr 0.1 -> 0.15 (chosen). Phase 2 repeats lr 0.1: 0.25, 0.26.
    rows = [
        paper_row("sgd", 0.01, 0, 0.20, "grid"), paper_row("sgd", 0.1, 0, 0.15, "grid"),
        paper_row("sgd", 0.1, 1, 0.25, "seeds"), paper_row("sgd", 0.1, 2, 0.26, "seeds"),
    ]
    sgd = analyze_sweep(rows).summary("A", "sgd")
    assert sgd.eta_star == 0.1 and sgd.best_seeds == 3  # not lr 0.01's one-seed 0.20 < mean 0.22
    assert sgd.protocol == "paper"
    assert sgd.best == pytest.approx(0.22) and sgd.best_std == pytest.approx(np.std([0.15, 0.25, 0.26], ddof=1))
    # expected best of k uses the first seed's values only: k = 1 is (0.20 + 0.15) / 2
    assert sgd.expected_best[0] == pytest.approx(0.175)
    row = paper_table(analyze_sweep(rows))[0]
    assert row.seeds == 3 and row.eta_star == 0.1


def test_grid_protocol_compares_only_lrs_run_with_the_same_seeds():
    # lr 0.01 ran seed 0 only (seed 1 was cancelled); lr 0.1 ran seeds 0 and 1.
    rows = [
        one_point("A", "sgd", 0.10, lr=0.01, seed=0),
        {**one_point("A", "sgd", 0.05, lr=0.01, seed=1), "status": "cancelled"},
        one_point("A", "sgd", 0.12, lr=0.1, seed=0), one_point("A", "sgd", 0.14, lr=0.1, seed=1),
    ]
    sgd = analyze_sweep(rows).summary("A", "sgd")
    assert sgd.eta_star == 0.1 and sgd.best_seeds == 2 and sgd.best == pytest.approx(0.13)
    assert sgd.protocol == "grid"


def test_grid_metrics_use_the_lrs_common_to_all_optimisers():
    # Off-decade base grid 3e-4 .. 3e-1; each optimiser adds its own default lr (sgd 0.1, adam 0.001).
    # Both have the same lr-response, so their grid metrics must agree.
    def response(lr: float) -> float:
        return min(0.9, 0.1 + 0.2 * (math.log10(lr) + 1.5) ** 2)

    base = [3e-4, 3e-3, 3e-2, 3e-1]
    rows = []
    for label, default in (("sgd", 0.1), ("adam", 0.001)):
        for lr in sorted([*base, default]):
            rows.append({**one_point("A", label, response(lr), lr=lr), "default_lr": default})
    analysis = analyze_sweep(rows)
    sgd, adam = analysis.summary("A", "sgd"), analysis.summary("A", "adam")
    assert sgd.lr_sensitivity == pytest.approx(adam.lr_sensitivity, rel=1e-12)
    assert next(t for t in analysis.tasks if t.task == "A").common_grid == tuple(base)
    assert sgd.good_window == pytest.approx(adam.good_window, rel=1e-12)
    assert sgd.expected_best == pytest.approx(adam.expected_best, rel=1e-12)
    # The out-of-the-box point is reported on its own.
    assert sgd.ootb == pytest.approx(response(0.1)) and adam.ootb == pytest.approx(response(0.001))


def test_lr_sensitivity_is_never_negative_and_expected_best_clamps_to_chance():
    # Nothing beats chance (0.9): the finished values 0.95 and 0.97 count as 0.9, like a divergence.
    worse = [one_point("A", "lamb", 0.95, lr=0.01), one_point("A", "lamb", 0.97, lr=0.1)]
    lamb = analyze_sweep(worse).summary("A", "lamb")
    assert lamb.lr_sensitivity == 0.0
    # A finished trial worse than chance ranks with a diverged one, not below it.
    rows = [one_point("A", "sgd", 0.1, lr=0.001), one_point("A", "sgd", 0.95, lr=0.01), diverged("A", "sgd", 0.1, 0)]
    sgd = analyze_sweep(rows).summary("A", "sgd")
    assert sgd.expected_best[0] == pytest.approx((0.1 + 0.9 + 0.9) / 3)


def test_tpe_sweeps_have_no_grid_metrics_and_say_why():
    rows = [
        {**one_point("A", "adam", m, lr=lr), "phase": "tpe", "default_lr": 0.001}
        for lr, m in [(0.001, 0.3), (0.0123, 0.12), (0.0131, 0.11), (0.0127, 0.115)]
    ]
    adam = analyze_sweep(rows).summary("A", "adam")
    assert math.isnan(adam.lr_sensitivity) and math.isnan(adam.good_window) and adam.expected_best == ()
    assert adam.grid_metrics_note == "not defined for TPE: its learning rates are samples, not a grid"
    assert adam.protocol == "tpe"
    # The default lr ran as TPE's fixed first trial: the out-of-the-box point is defined.
    assert adam.ootb == pytest.approx(0.3) and adam.best == pytest.approx(0.11)
    data = analyze_sweep(rows).summary("A", "adam").to_dict()
    assert data["lr_sensitivity"] is None and data["good_window"] is None


# Student t quantile t_{0.975} with 2 degrees of freedom (statistical tables): 4.302652729911275
T_975_DF2 = 4.302652729911275


def three_seeds(label, values, *, task="digits-mlp", lr=0.01, lower=True):
    return [one_point(task, label, v, lr=lr, seed=seed, lower=lower) for seed, v in enumerate(values)]


def test_intervals_paired_comparisons_and_the_best_star():
    rows = [
        *three_seeds("nero", [0.10, 0.11, 0.12]),
        *three_seeds("sgd", [0.20, 0.21, 0.23]),
        *three_seeds("adam", [0.10, 0.13, 0.11]),
    ]
    analysis = analyze_sweep(rows)
    nero = analysis.summary("digits-mlp", "nero")
    half = T_975_DF2 * 0.01 / math.sqrt(3)  # sample std of 0.10, 0.11, 0.12 is 0.01
    assert nero.best_ci == pytest.approx((0.11 - half, 0.11 + half), rel=1e-9)
    # digits: an error rate on 357 test images
    assert nero.binomial_se == pytest.approx(math.sqrt(0.11 * 0.89 / 357), rel=1e-12)
    sgd = analysis.comparison("digits-mlp", "sgd")
    assert sgd.seeds == 3 and sgd.difference == pytest.approx(np.mean([0.10, 0.10, 0.11]), rel=1e-9)
    assert sgd.distinguishable is True and sgd.text.startswith("behind the best")
    adam = analysis.comparison("digits-mlp", "adam")
    differences = [0.0, 0.02, -0.01]  # adam - nero per seed
    half = T_975_DF2 * float(np.std(differences, ddof=1)) / math.sqrt(3)
    assert (adam.ci_low, adam.ci_high) == pytest.approx((np.mean(differences) - half, np.mean(differences) + half))
    assert adam.distinguishable is False
    # The star: the best and every optimiser not distinguishable from it.
    stars = {row.label: row.is_best for row in paper_table(analysis)}
    assert stars == {"nero": True, "sgd": False, "adam": True}
    row = next(r for r in paper_table(analysis) if r.label == "nero")
    assert row.interval_text.startswith("[") and "95% t, 3 seeds" in row.interval_text


def test_one_seed_says_there_is_no_interval():
    rows = [one_point("digits-mlp", "nero", 0.10), one_point("digits-mlp", "sgd", 0.12)]
    analysis = analyze_sweep(rows)
    assert analysis.comparison("digits-mlp", "sgd").text == "1 seed: no interval"
    sgd_row = next(r for r in paper_table(analysis) if r.label == "sgd")
    assert sgd_row.interval_text == "1 seed: no interval" and sgd_row.is_best is False
    assert math.isnan(analysis.summary("digits-mlp", "nero").best_ci[0])
    # A higher-is-better interval comes back in the task's orientation, low < high.
    returns = analyze_sweep(three_seeds("nero", [100.0, 110.0, 120.0], task="R", lower=False))
    low, high = returns.summary("R", "nero").best_ci
    assert low < 110.0 < high and (low + high) / 2 == pytest.approx(110.0)
    assert math.isnan(returns.summary("R", "nero").binomial_se)  # not an error rate


def test_ootb_regret_is_capped_at_chance():
    # sgd's default lr ends far above chance (a perplexity of 1e14 with chance 1e4): regret 1, not 1e10.
    rows = [one_point("T", "nero", 11.35, initial=1e4), one_point("T", "sgd", 1e14, initial=1e4)]
    assert analyze_sweep(rows).summary("T", "sgd").ootb_regret == 1.0


def test_a_frame_gives_the_same_records_as_pandas_to_dict() -> None:
    """The analysis reads a DataFrame column by column (faster for big sweeps): the records must be exactly what
    ``to_dict("records")`` gives, missing values, NumPy scalars and string dtypes included."""
    import math

    import numpy as np
    import pandas as pd

    from nero_study.study.analysis import _records

    frame = pd.DataFrame(
        {
            "task": ["digits-mlp", None, "text-lm"],
            "lr": [0.1, np.nan, np.inf],
            "seed": np.array([0, 1, 2], dtype="int64"),
            "lower_is_better": [True, False, None],
            "status": pd.array(["succeeded", "diverged", "failed"], dtype="string"),
        }
    )

    def same(a, b) -> bool:
        return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))

    fast, reference = _records(frame), frame.to_dict("records")
    assert [list(row) for row in fast] == [list(row) for row in reference]
    assert all(same(fast[i][key], reference[i][key]) for i in range(3) for key in frame.columns), (fast, reference)
    assert _records(frame.iloc[0:0]) == []


def _varied_sweeps() -> dict[str, list[dict]]:
    """Sweeps with what a store or an import can hold: NaN/inf metrics, failed trials without an orientation,
    a missing seed, an empty label, unfinished trials, declared test-set sizes, the paper protocol's phases,
    and a bigger random grid (3 tasks x 3 optimisers x 5 lrs x 4 seeds, ~20% diverged, ~5% failed)."""
    import random

    edge = [
        *fixture(),
        {**trial("A", "sgd", 0.1, 2, math.inf), "status": "succeeded"},
        {**trial("A", "adam", 0.01, 3, math.nan, status="failed"), "lower_is_better": None},
        {**trial("A", "nero", 0.01, 0, 0.2), "seed": math.nan},
        {**trial("A", "lamb", 0.1, 1, 0.3), "label": ""},
        {**trial("B", "sgd", 0.01, 1, 60.0, lower=False, initial=10.0), "metric_name": None},
    ]
    declared = [
        {**one_point("D", label, metric, seed=seed), "test_set_size": 357, "metric_is_error_rate": flag}
        for label, metric, flag in (("sgd", 0.2, True), ("adam", 0.1, None))
        for seed in (0, 1)
    ]
    paper = [
        paper_row("sgd", 0.01, 0, 0.20, "grid"), paper_row("sgd", 0.1, 0, 0.15, "grid"),
        paper_row("sgd", 0.1, 1, 0.25, "seeds"), paper_row("sgd", 0.1, 2, 0.26, "seeds"),
        paper_row("adam", 0.01, 0, 0.18, "grid"), paper_row("adam", 0.1, 0, math.nan, "grid"),
        {**paper_row("adam", 0.01, 1, 0.19, "seeds"), "status": "diverged"},
        # Two seeds in phase 1: the first (lowest) seed's choice counts (lr 0.1 at seed 0, lr 0.01 at seed 1).
        paper_row("nero", 0.01, 1, 0.12, "grid"), paper_row("nero", 0.1, 1, 0.30, "grid"),
        paper_row("nero", 0.01, 0, 0.40, "grid"), paper_row("nero", 0.1, 0, 0.10, "grid"),
    ]  # fmt: skip
    rng = random.Random(7)
    grid = []
    for task, lower in (("T1", True), ("T2", False), ("T3", True)):
        for optimizer in ("nero", "sgd", "adam"):
            for lr in (1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1):
                for seed in range(4):
                    draw = rng.random()
                    status = "failed" if draw < 0.05 else "diverged" if draw < 0.25 else "succeeded"
                    metric = math.nan if status != "succeeded" else rng.uniform(0.05, 0.9)
                    grid.append(trial(task, optimizer, lr, seed, metric, status=status, lower=lower))
    return {"edge": edge, "declared": declared, "paper": paper, "grid": grid}


@pytest.mark.parametrize("name", ["edge", "declared", "paper", "grid"])
def test_a_frame_is_analysed_exactly_as_its_records(name):
    """A DataFrame is read column by column (``_gather_columns``, for big sweeps), records one at a time: the
    same analysis, to the last bit (repr of every number, NaN included) and in the same order."""
    frame = pd.DataFrame(_varied_sweeps()[name])
    from_frame, from_records = analyze_sweep(frame), analyze_sweep(frame.to_dict("records"))
    assert from_frame.per_optimizer  # something was analysed
    assert repr(from_frame) == repr(from_records)
    assert json.dumps(from_frame.to_dict()) == json.dumps(from_records.to_dict())
    chance = {"T1": 0.95, "A": 0.9}
    assert repr(analyze_sweep(frame, chance=chance)) == repr(analyze_sweep(frame.to_dict("records"), chance=chance))


def test_a_frame_is_refused_as_its_records_are():
    mixed = pd.DataFrame([trial("A", "sgd", 0.1, 0, 0.2), trial("A", "sgd", 0.01, 0, 0.3, lower=False)])
    lacking = pd.DataFrame([trial("A", "sgd", 0.1, 0, 0.2)]).drop(columns=["status"])
    for frame in (mixed, lacking):
        with pytest.raises(ValueError) as from_frame:
            analyze_sweep(frame)
        with pytest.raises(ValueError) as from_records:
            analyze_sweep(frame.to_dict("records"))
        assert str(from_frame.value) == str(from_records.value)
    assert repr(analyze_sweep(lacking.iloc[0:0])) == repr(analyze_sweep([]))
