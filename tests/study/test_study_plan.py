"""Planning trials from a SweepSpec: grid, paper (with seed repeats of the best lr) and tpe."""

from __future__ import annotations

import math
from collections import Counter

from nero_study.study.plan import plan_seed_repeats, plan_trials, tpe_space
from nero_study.study.spec import SweepSpec


def make_spec(**fields) -> SweepSpec:
    data = {
        "tasks": ["digits-mlp", "ppo-cartpole"],
        "optimizers": ["adam", {"name": "nero", "label": "nero-free", "settings": {"constraints": False}}],
        "lrs": {"min": 1e-4, "max": 1, "points_per_decade": 1},
        "seeds": [0, 1, 2],
        "budget": "smoke",
        "task_options": {"digits-mlp": {"epochs": 1}},
        **fields,
    }
    return SweepSpec.model_validate(data)


def test_grid_protocol_plans_every_point():
    spec = make_spec(protocol="grid")
    trials = plan_trials(spec)
    # 2 tasks x 2 optimisers x 5 lrs (defaults 1e-3 and 1e-2 are on the grid) x 3 seeds = 60.
    assert len(trials) == 60 == spec.trial_count()
    assert {t.phase for t in trials} == {"grid"}
    keys = {(t.spec.task, t.spec.label, t.spec.lr, t.spec.seed) for t in trials}
    assert len(keys) == 60
    per_lr = Counter(t.spec.lr for t in trials if t.spec.label == "adam")
    assert per_lr == {1e-4: 6, 1e-3: 6, 1e-2: 6, 1e-1: 6, 1.0: 6}


def test_trial_specs_carry_the_variant_and_task_options():
    spec = make_spec(protocol="grid", preset="library")
    trials = plan_trials(spec)
    variant = next(t.spec for t in trials if t.spec.label == "nero-free")
    assert variant.optimizer == "nero"
    assert variant.hyperparameters == {"constraints": False}
    assert variant.budget == "smoke" and variant.preset == "library"
    adam_mlp = next(t.spec for t in trials if t.spec.label == "adam" and t.spec.task == "digits-mlp")
    assert adam_mlp.optimizer == "adam" and adam_mlp.hyperparameters == {}
    assert adam_mlp.task_options == {"epochs": 1}
    adam_ppo = next(t.spec for t in trials if t.spec.task == "ppo-cartpole")
    assert adam_ppo.task_options == {}


def test_default_lr_off_the_grid_adds_one_point_per_optimizer():
    spec = make_spec(protocol="grid", lrs=[3e-4, 3e-2], seeds=[0])
    trials = plan_trials(spec)
    # Each optimiser: 2 grid lrs + its default = 3 lrs; 2 tasks x 2 optimisers x 3 = 12.
    assert len(trials) == 12 == spec.trial_count()
    assert sorted({t.spec.lr for t in trials if t.spec.label == "adam"}) == [3e-4, 1e-3, 3e-2]


def test_paper_protocol_plans_the_grid_with_the_first_seed():
    spec = make_spec(protocol="paper")
    trials = plan_trials(spec)
    assert len(trials) == 2 * 2 * 5
    assert {t.spec.seed for t in trials} == {0}
    # Planned total: the grid (20) + 2 more seeds for each of the 4 (task, optimiser) pairs = 28.
    assert spec.trial_count() == 28


def test_tpe_protocol_plans_nothing_up_front_and_searches_the_grid_ends():
    spec = make_spec(protocol="tpe", tpe_trials=7)
    assert plan_trials(spec) == []
    assert spec.trial_count() == 7 * 2 * 2
    assert tpe_space(spec, "adam") == (1e-4, 1.0)
    narrow = make_spec(protocol="tpe", lrs=[1e-3, 1e-2], optimizers=["sgd"])
    assert tpe_space(narrow, "sgd") == (1e-3, 0.1)  # the default lr 0.1 widens the space


def record(task: str, label: str, lr: float, status: str, metric: float, lower: bool) -> dict:
    return {
        "task": task, "label": label, "lr": lr, "status": status, "metric": metric, "lower_is_better": lower,
    }


def test_seed_repeats_pick_the_best_lr_lower_and_higher_is_better():
    spec = make_spec(protocol="paper", optimizers=["adam"])
    results = [
        # digits-mlp: test error, lower is better. 1e-4 "diverged" with a recorded 0.0 must not win.
        record("digits-mlp", "adam", 1e-4, "diverged", 0.0, True),
        record("digits-mlp", "adam", 1e-3, "succeeded", 0.30, True),
        record("digits-mlp", "adam", 1e-2, "succeeded", 0.12, True),
        record("digits-mlp", "adam", 1e-1, "failed", math.nan, True),
        record("digits-mlp", "adam", 1.0, "diverged", math.nan, True),
        # ppo-cartpole: episode return, higher is better.
        record("ppo-cartpole", "adam", 1e-4, "succeeded", 40.0, False),
        record("ppo-cartpole", "adam", 1e-3, "succeeded", 480.0, False),
        record("ppo-cartpole", "adam", 1e-2, "succeeded", 200.0, False),
        record("ppo-cartpole", "adam", 1e-1, "diverged", 9999.0, False),
        record("ppo-cartpole", "adam", 1.0, "diverged", math.nan, False),
    ]
    repeats = plan_seed_repeats(spec, results)
    got = {(t.spec.task, t.spec.lr, t.spec.seed, t.phase) for t in repeats}
    assert got == {
        ("digits-mlp", 1e-2, 1, "seeds"),
        ("digits-mlp", 1e-2, 2, "seeds"),
        ("ppo-cartpole", 1e-3, 1, "seeds"),
        ("ppo-cartpole", 1e-3, 2, "seeds"),
    }
    assert spec.trial_count() == len(plan_trials(spec)) + len(repeats)


def test_seed_repeats_ignore_later_seeds_so_a_resumed_sweep_repeats_the_same_lr():
    spec = make_spec(protocol="paper", optimizers=["adam"], tasks=["digits-mlp"])
    phase_1 = [
        {**record("digits-mlp", "adam", 1e-3, "succeeded", 0.20, True), "seed": 0},
        {**record("digits-mlp", "adam", 1e-2, "succeeded", 0.25, True), "seed": 0},
    ]
    # Phase 2 had started at lr 1e-3 with a bad seed; the choice must not move to 1e-2.
    phase_2 = [{**record("digits-mlp", "adam", 1e-3, "succeeded", 0.90, True), "seed": 1}]
    repeats = plan_seed_repeats(spec, phase_1 + phase_2)
    assert {(t.spec.lr, t.spec.seed) for t in repeats} == {(1e-3, 1), (1e-3, 2)}


def test_seed_repeats_skip_pairs_that_never_succeeded():
    spec = make_spec(protocol="paper", optimizers=["adam"], tasks=["digits-mlp"])
    results = [record("digits-mlp", "adam", lr, "diverged", math.nan, True) for lr in (1e-4, 1e-3, 1e-2)]
    assert plan_seed_repeats(spec, results) == []


def test_seed_repeats_accept_a_dataframe_and_trial_results():
    import pandas as pd

    from nero_study.tasks.base import TrialResult, TrialSpec

    spec = make_spec(protocol="paper", optimizers=["adam"], tasks=["digits-mlp"], seeds=[0, 1])
    rows = [
        {**record("digits-mlp", "adam", 1e-3, "succeeded", 0.2, True), "label": None, "optimizer": "adam"},
        {**record("digits-mlp", "adam", 1e-2, "succeeded", 0.1, True), "label": None, "optimizer": "adam"},
    ]
    repeats = plan_seed_repeats(spec, pd.DataFrame(rows))
    assert [(t.spec.lr, t.spec.seed) for t in repeats] == [(1e-2, 1)]

    def result(lr: float, metric: float) -> TrialResult:
        trial_spec = TrialSpec(task="digits-mlp", optimizer="adam", lr=lr)
        return TrialResult(trial_spec, "succeeded", metric, metric, 0.9, "test error", True, [], 1.0, "cpu")

    repeats = plan_seed_repeats(spec, [result(1e-3, 0.1), result(1e-2, 0.3)])
    assert [(t.spec.lr, t.spec.seed) for t in repeats] == [(1e-3, 1)]
