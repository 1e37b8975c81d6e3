"""The per-task verdict against hand-made sweeps whose right answer is known.

Base sweep (task T, test error, lower is better, chance 0.9, seeds 0, 1, 2):

  nero (default 0.01):  lr 0.001 -> 0.30 x3; lr 0.01 -> 0.100, 0.102, 0.098 (mean 0.100, the best of the task);
                        lr 0.1 -> 0.40 x3. 95% t-interval at 0.01: 0.100 ± 4.303 * 0.002 / sqrt(3) = ± 0.00497.
  adam (default 0.001): lr 0.0001 -> 0.5 x3; lr 0.001 -> 0.30, 0.31, 0.29 (ootb 0.30, regret 0.2 / 0.8 = 0.25);
                        lr 0.01 -> 0.101, 0.100, 0.102 (paired with nero: 0.001, -0.002, 0.004, interval
                        includes 0: matches the best); lr 0.1 -> 0.6 x3.
                        -> behind out of the box; needs lr 0.01, 10x its default, to match.
  sgd (default 0.1):    lr 0.001 -> 0.6 x3, lr 0.01 -> 0.4 x3, lr 0.1 -> 0.18, 0.19, 0.17 (its best, paired
                        differences 0.08, 0.088, 0.072: distinguishable), lr 1 -> 0.5 x3.
                        -> behind (regret 0.08 / 0.8 = 0.1); its default is already its best and stays
                        behind (tuned gap 0.1).
  lamb (default 0.01):  lr 0.0001 -> 0.5 x3; lr 0.001 -> 0.103, 0.104, 0.102 (its best, mean 0.103);
                        lr 0.01 -> 0.1035 x3 (ootb, inside nero's interval [0.095, 0.105]); lr 0.1 -> 0.5 x3.
                        -> a winner out of the box (by the reference's interval, not a paired comparison).
"""

from __future__ import annotations

import pytest

from nero_study.study.analysis import analyze_sweep
from nero_study.study.verdict import EDGE_ADVICE, grid_edge, sweep_verdict

DEFAULT_LR = {"nero": 0.01, "adam": 0.001, "sgd": 0.1, "lamb": 0.01}
SEEDS = (0, 1, 2)


def trial(optimizer, lr, seed, metric, *, status="succeeded", lower=True, initial=0.9, task="T", **extra):
    return {
        "task": task,
        "label": optimizer,
        "optimizer": optimizer,
        "lr": lr,
        "seed": seed,
        "status": status,
        "metric": metric,
        "lower_is_better": lower,
        "metric_name": "test error" if lower else "accuracy",
        "initial_metric": initial,
        "default_lr": DEFAULT_LR[optimizer],
        **extra,
    }


def runs(optimizer, lr, values, seeds=SEEDS, **kw):
    if not isinstance(values, (list, tuple)):
        values = [values] * len(seeds)
    return [trial(optimizer, lr, seed, value, **kw) for seed, value in zip(seeds, values, strict=True)]


def base_sweep(optimizers=("nero", "adam", "sgd", "lamb"), seeds=SEEDS, **kw) -> list[dict]:
    n = len(seeds)
    table = {
        "nero": [(0.001, 0.30), (0.01, [0.100, 0.102, 0.098][:n]), (0.1, 0.40)],
        "adam": [(0.0001, 0.5), (0.001, [0.30, 0.31, 0.29][:n]), (0.01, [0.101, 0.100, 0.102][:n]), (0.1, 0.6)],
        "sgd": [(0.001, 0.6), (0.01, 0.4), (0.1, [0.18, 0.19, 0.17][:n]), (1.0, 0.5)],
        "lamb": [(0.0001, 0.5), (0.001, [0.103, 0.104, 0.102][:n]), (0.01, 0.1035), (0.1, 0.5)],
    }
    rows = []
    for optimizer in optimizers:
        for lr, values in table[optimizer]:
            rows.extend(runs(optimizer, lr, values, seeds=seeds, **kw))
    return rows


def by_label(task_verdict):
    return {o.label: o for o in task_verdict.optimizers}


def test_known_sweep_winners_regrets_and_sentence():
    verdict = sweep_verdict(analyze_sweep(base_sweep()))
    (task,) = verdict.tasks
    assert task.best_label == "nero" and task.best_lr == 0.01
    assert task.winners == ("nero", "lamb")
    v = by_label(task)
    assert v["nero"].status == "winner" and v["nero"].ootb_regret == pytest.approx(0.0, abs=1e-12)
    assert v["adam"].status == "behind"
    assert v["adam"].ootb_regret == pytest.approx(0.25)
    assert v["adam"].tuned_matches and v["adam"].lr_factor == pytest.approx(10.0)
    assert v["adam"].tuned_gap == pytest.approx((0.101 - 0.100) / 0.8)
    assert v["sgd"].status == "behind" and not v["sgd"].tuned_matches
    assert v["sgd"].tuned_gap == pytest.approx(0.1) and v["sgd"].ootb_regret == pytest.approx(0.1)
    assert v["lamb"].status == "winner" and v["lamb"].eta_star == 0.001
    assert all(o.edge is None and o.reasons == () for o in task.optimizers)
    assert task.sentence == (
        "Nero at its default lr (0.01) gives the best tuned result; "
        "adam at its default lr (0.001) is behind (regret 0.25); it needs lr 0.01, 10x its default, to match; "
        "sgd at its default lr (0.1) is behind (regret 0.1); its default lr is already its best, still behind "
        "(tuned gap 0.1); "
        "lamb at its default lr (0.01) is within noise of the best tuned result."
    )


def test_higher_is_better_gives_the_same_verdict():
    """The same sweep as accuracy (1 - error, chance 0.1): every status and number is the same."""
    rows = base_sweep()
    for row in rows:
        row["metric"], row["lower_is_better"], row["initial_metric"] = 1 - row["metric"], False, 0.1
    lower = by_label(sweep_verdict(analyze_sweep(base_sweep())).tasks[0])
    higher = by_label(sweep_verdict(analyze_sweep(rows)).tasks[0])
    for label in lower:
        assert higher[label].status == lower[label].status
        assert higher[label].ootb_regret == pytest.approx(lower[label].ootb_regret, rel=1e-9)
        assert higher[label].tuned_gap == pytest.approx(lower[label].tuned_gap, rel=1e-9, abs=1e-12)


def test_one_seed_withholds_every_claim():
    verdict = sweep_verdict(analyze_sweep(base_sweep(seeds=(0,))))
    (task,) = verdict.tasks
    assert task.winners == ()
    assert {o.status for o in task.optimizers} == {"inconclusive"}
    assert "1 paired seed: no interval" in by_label(task)["sgd"].reasons
    assert "1 seed at its default lr: no interval" in by_label(task)["adam"].reasons
    assert "too little evidence" in task.sentence
    assert "within noise" not in task.sentence and "is behind" not in task.sentence


def test_failed_trials_withhold_the_claim_of_that_optimiser():
    rows = base_sweep()
    rows.append(trial("adam", 0.1, 3, float("nan"), status="failed"))
    v = by_label(sweep_verdict(analyze_sweep(rows)).tasks[0])
    assert v["adam"].status == "inconclusive" and v["adam"].failed == 1
    assert "1 failed trial left out" in v["adam"].reasons
    assert v["sgd"].status == "behind"  # the others keep their claims


def test_best_lr_at_grid_edge_is_flagged_and_a_winner_against_it_is_withheld():
    """Drop nero's lr 0.1: its best lr 0.01 becomes the top of its grid."""
    rows = [row for row in base_sweep() if not (row["label"] == "nero" and row["lr"] == 0.1)]
    analysis = analyze_sweep(rows)
    assert grid_edge(analysis.summary("T", "nero")) == "high"
    (task,) = sweep_verdict(analysis).tasks
    v = by_label(task)
    assert EDGE_ADVICE in v["nero"].reasons and "widen the grid" in v["nero"].clause
    assert v["nero"].status == "winner"  # its own claim stands: its default is its best lr
    assert v["lamb"].status == "inconclusive"  # within noise of a reference that may lie beyond the grid
    assert any("edge of its grid" in reason for reason in task.reasons)
    assert v["adam"].status == "behind"  # being behind does not depend on a better reference


def test_edge_is_not_flagged_under_tpe():
    rows = [row for row in base_sweep() if not (row["label"] == "nero" and row["lr"] == 0.1)]
    for row in rows:
        row["phase"] = "tpe"
    assert grid_edge(analyze_sweep(rows).summary("T", "nero")) is None


def test_a_difference_within_the_binomial_se_is_not_called_behind():
    """Error rate on a test set of 100: SE at the best p = 0.1 is sqrt(0.1 * 0.9 / 100) = 0.03. A default lr
    0.02 behind (outside the seed interval of ±0.005) is within one SE: not claimed."""
    rows = base_sweep(optimizers=("nero", "adam"))
    for row in rows:
        if row["label"] == "adam" and row["lr"] == 0.001:
            row["metric"] = {0: 0.12, 1: 0.121, 2: 0.119}[row["seed"]]
        row["test_set_size"], row["metric_is_error_rate"] = 100, True
    v = by_label(sweep_verdict(analyze_sweep(rows)).tasks[0])
    assert v["adam"].status == "inconclusive"
    assert any("binomial SE 0.03" in reason for reason in v["adam"].reasons)
    # Without the declared test set the same numbers are a claim.
    for row in rows:
        del row["test_set_size"], row["metric_is_error_rate"]
    assert by_label(sweep_verdict(analyze_sweep(rows)).tasks[0])["adam"].status == "behind"


def test_default_lr_not_run():
    rows = [row for row in base_sweep() if not (row["label"] == "adam" and row["lr"] == 0.001)]
    v = by_label(sweep_verdict(analyze_sweep(rows)).tasks[0])
    assert v["adam"].status == "inconclusive" and "its default lr was not run" in v["adam"].reasons


def test_to_dict_is_json_safe():
    import json

    data = sweep_verdict(analyze_sweep(base_sweep(seeds=(0,)))).to_dict()
    json.dumps(data, allow_nan=False)
    assert data["tasks"][0]["optimizers"][0]["label"] == "nero"


def test_an_inconclusive_clause_makes_no_tuned_claim():
    (task,) = sweep_verdict(analyze_sweep(base_sweep(seeds=(0,)))).tasks
    assert "still behind" not in task.sentence and "to match" not in task.sentence


def test_nothing_learnt_is_no_win():
    """Every run diverges (counted as chance): all equal, so all within any interval, but nobody won anything."""
    rows = base_sweep(optimizers=("nero", "adam"))
    for row in rows:
        row["status"], row["metric"] = "diverged", float("nan")
    (task,) = sweep_verdict(analyze_sweep(rows)).tasks
    assert task.winners == ()
    assert all("no optimiser beat chance on this task" in o.reasons for o in task.optimizers)


def test_an_interval_that_reaches_chance_claims_no_winner():
    """Two noisy seeds: nero at 0.01 -> 0.1, 0.5 (the best, mean 0.3); adam at its default 0.001 -> 0.2, 0.9.
    Paired differences 0.1, 0.4: mean 0.25, 95% t-interval 0.25 ± 12.71 * 0.2121 / sqrt(2) = [-1.66, 2.16],
    which includes 0 (not distinguishable) but also reaches chance: 0.3 + 2.16 > 0.9. No winner claimed."""
    seeds = (0, 1)
    rows = [
        *runs("nero", 0.001, 0.6, seeds), *runs("nero", 0.01, [0.1, 0.5], seeds), *runs("nero", 0.1, 0.7, seeds),
        *runs("adam", 0.0001, 0.8, seeds), *runs("adam", 0.001, [0.2, 0.9], seeds), *runs("adam", 0.01, 0.85, seeds),
    ]
    analysis = analyze_sweep(rows)
    assert analysis.comparison("T", "adam").distinguishable is False
    v = by_label(sweep_verdict(analysis).tasks[0])
    assert v["adam"].status == "inconclusive"
    assert any("reaches chance" in reason for reason in v["adam"].reasons)
    assert v["nero"].status == "winner"  # the best itself: its default lr is its best lr
