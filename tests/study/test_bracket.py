"""The bracket rule on hand-made results: extend past an edge, stop at divergence and at no progress, refine to the
stated resolution, stop when the budget is spent; its rounds planned from stored records; its spec fields."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from nero_study.study.bracket import LrOutcome, bracket_summaries, next_lr
from nero_study.study.plan import plan_bracket_round, plan_trials
from nero_study.study.spec import SweepSpec

CHANCE = 10.0  # oriented (lower is better) metric at chance, above every value that made progress


def step(tried: list[LrOutcome], *, resolution: float = 0.25, max_lrs: int = 12, step_decades: float = 1.0):
    return next_lr(tried, chance=CHANCE, step=step_decades, resolution=resolution, max_lrs=max_lrs)


def bowl(lr: float) -> float:
    """A loss with its minimum at lr 10^-2.3 (0 there), diverging from lr 1 up."""
    return CHANCE if lr >= 1.0 else (math.log10(lr) + 2.3) ** 2


def slope(lr: float) -> float:
    """A loss that falls with the lr all the way to the divergence at lr 1."""
    return CHANCE if lr >= 1.0 else -math.log10(lr)


def run_rule(grid: list[float], loss=bowl, **kwargs) -> tuple[list[tuple[str, float]], str]:
    """Apply the rule to ``loss`` until it is done: the (kind, lr) it added, in order, and why it stopped."""
    tried = [LrOutcome(lr, loss(lr), diverged=lr >= 1.0) for lr in grid]
    added = []
    for _ in range(50):
        decision = step(tried, **kwargs)
        if decision.lr is None:
            return added, decision.reason
        added.append((decision.kind, decision.lr))
        tried.append(LrOutcome(decision.lr, loss(decision.lr), diverged=decision.lr >= 1.0))
    raise AssertionError("the rule did not stop within 50 rounds")


def test_best_at_the_high_edge_extends_one_grid_step_up():
    decision = step([LrOutcome(1e-4, 0.8), LrOutcome(1e-3, 0.5)])
    assert (decision.kind, decision.lr) == ("extend-up", 1e-2)
    # The step is the grid's spacing: a half-decade grid extends by half a decade (rounded to 6 digits).
    decision = step([LrOutcome(1e-4, 0.8), LrOutcome(1e-3, 0.5)], step_decades=0.5)
    assert decision.lr == pytest.approx(10**-2.5, rel=5e-6)  # kept to 6 significant digits


def test_best_at_the_low_edge_extends_one_grid_step_down():
    decision = step([LrOutcome(1e-2, 0.3), LrOutcome(1e-1, 0.5)])
    assert (decision.kind, decision.lr) == ("extend-down", 1e-3)


def test_a_diverged_high_lr_stops_the_upward_extension():
    # The new high lr 0.1 diverged (its value is chance): the best 0.01 is now inside, so the rule refines
    # towards its better neighbour 0.001 instead of extending further up.
    tried = [LrOutcome(1e-3, 0.5), LrOutcome(1e-2, 0.3), LrOutcome(1e-1, CHANCE, diverged=True)]
    decision = step(tried)
    assert decision.kind == "refine" and decision.lr == pytest.approx(math.sqrt(1e-3 * 1e-2), rel=5e-6)
    # A best lr with a diverged seed is not extended past, even at the top edge: it refines below it.
    decision = step([LrOutcome(1e-3, 0.5), LrOutcome(1e-2, 0.3, diverged=True)])
    assert decision.kind == "refine" and decision.lr < 1e-2


def test_a_low_lr_without_progress_stops_the_downward_extension():
    # The new low lr 1e-4 made no progress (at chance): the best 1e-3 is inside; its better neighbour is 1e-2.
    tried = [LrOutcome(1e-4, CHANCE), LrOutcome(1e-3, 0.3), LrOutcome(1e-2, 0.5)]
    decision = step(tried)
    assert decision.kind == "refine" and decision.lr == pytest.approx(math.sqrt(1e-3 * 1e-2), rel=5e-6)


def test_extends_then_refines_until_the_best_and_its_better_neighbour_are_a_quarter_decade_apart():
    # By hand on bowl (minimum at 10^-2.3), from the grid [1e-4, 1e-3] with a one-decade step:
    # 1e-3 best at the top -> 1e-2 (0.09) best at the top -> 1e-1 (1.69) worse: 1e-2 inside, better neighbour
    # 1e-3 (0.49) -> midpoint 10^-2.5 (0.04), best; neighbours 1e-3 (0.49), 1e-2 (0.09) -> midpoint 10^-2.25
    # (0.0025), best; neighbours 10^-2.5 (0.04), 1e-2 (0.09): 0.25 decades from 10^-2.5: resolved.
    added, reason = run_rule([1e-4, 1e-3])
    assert [kind for kind, _ in added] == ["extend-up", "extend-up", "refine", "refine"]
    # lrs are kept to 6 significant digits (relative error <= 5e-6); a midpoint of a rounded lr carries half of
    # its error on top of its own rounding: <= 7.5e-6.
    assert [lr for _, lr in added] == pytest.approx([1e-2, 1e-1, 10**-2.5, 10**-2.25], rel=7.5e-6)
    assert reason.startswith("resolved") and "0.25 decades" in reason
    # A finer resolution refines further, a coarser one stops earlier.
    finer, _ = run_rule([1e-4, 1e-3], resolution=0.1)
    assert len(finer) > len(added) and all(kind == "refine" for kind, _ in finer[4:])
    coarse, reason = run_rule([1e-4, 1e-3], resolution=0.5)
    assert len(coarse) == 3 and reason.startswith("resolved")


def test_the_upward_extension_runs_until_an_lr_diverges():
    # On slope the loss falls up to the divergence at 1: the rule climbs decade by decade, lr 1 diverges, and it
    # refines below 0.1 instead: 10^-1.5 (1.5, worse than 0.1's 1), then 10^-1.25, a quarter decade from 0.1.
    added, reason = run_rule([1e-4, 1e-3], loss=slope)
    assert added[:3] == [("extend-up", 1e-2), ("extend-up", 1e-1), ("extend-up", 1.0)]
    assert [kind for kind, _ in added[3:]] == ["refine", "refine"]
    assert [lr for _, lr in added[3:]] == pytest.approx([10**-1.5, 10**-1.25], rel=7.5e-6)
    assert reason.startswith("resolved: best lr 0.1")
    # On bowl the climb stops earlier, where the lr got worse (0.1) before anything diverged.
    added, _ = run_rule([1e-6, 1e-5], max_lrs=20)
    assert [lr for kind, lr in added if kind == "extend-up"] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-9)


def test_the_budget_stops_the_bracket():
    added, reason = run_rule([1e-4, 1e-3], max_lrs=4)  # room for two lrs beyond the grid
    assert [lr for _, lr in added] == pytest.approx([1e-2, 1e-1])
    assert reason.startswith("budget spent: 4 of 4 lrs tried")
    assert step([LrOutcome(1e-4, 0.8), LrOutcome(1e-3, 0.5)], max_lrs=2).lr is None  # a full coarse grid


def test_when_nothing_beats_chance():
    # Every lr diverged: go down. None diverged and none progressed: go up. Both: nothing can help.
    assert step([LrOutcome(1e-1, CHANCE, True), LrOutcome(1.0, CHANCE, True)]).kind == "extend-down"
    assert step([LrOutcome(1e-6, CHANCE), LrOutcome(1e-5, CHANCE)]).kind == "extend-up"
    decision = step([LrOutcome(1e-6, CHANCE), LrOutcome(1.0, CHANCE, True)])
    assert decision.lr is None and "no lr beat chance" in decision.reason


def test_failed_lrs_are_no_evidence_and_are_not_tried_again():
    # The lr past the edge was tried and failed: it is not tried again; the rule refines below the best instead.
    tried = [LrOutcome(1e-4, 0.8), LrOutcome(1e-3, 0.5), LrOutcome(1e-2, math.nan)]
    decision = step(tried)
    assert decision.kind == "refine" and decision.lr == pytest.approx(math.sqrt(1e-7), rel=5e-6)
    # Once refined below, the rule stops and says why it could not go past the edge.
    tried = [LrOutcome(1e-3, 0.8), LrOutcome(10**-2.25, 0.6), LrOutcome(1e-2, 0.5), LrOutcome(1e-1, math.nan)]
    decision = step(tried)
    assert decision.lr is None
    assert decision.reason == (
        "resolved: best lr 0.01, its better neighbour 0.00562341 is 0.25 decades away (<= 0.25); "
        "lr 0.1 was tried already: its trials failed (best lr 0.01 is the highest tried)"
    )
    assert step([LrOutcome(1e-3, math.nan)]).reason.startswith("no evidence")
    with pytest.raises(ValueError, match="Invalid step 0"):
        step(tried, step_decades=0.0)


# --- rounds planned from stored records -----------------------------------------------------------------------


def spec_of(**fields) -> SweepSpec:
    base = {"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [1e-4, 1e-3], "protocol": "bracket",
            "seeds": [0, 1], "budget": "smoke", "bracket_max_lrs": 6}
    return SweepSpec.model_validate({**base, **fields})


def record(lr: float, seed: int, phase: str, metric: float, status: str = "succeeded", label: str = "nero") -> dict:
    return {"task": "digits-mlp", "label": label, "optimizer": "nero", "lr": lr, "seed": seed, "phase": phase,
            "status": status, "metric": metric, "initial_metric": 0.9, "lower_is_better": True}


def test_round_zero_is_the_grid_on_every_seed_and_each_round_adds_one_lr_on_every_seed():
    spec = spec_of()
    first = plan_trials(spec)  # nero's default lr 0.01 joins its coarse grid
    assert {(t.spec.lr, t.spec.seed, t.phase) for t in first} == {
        (lr, seed, "bracket-0") for lr in (1e-4, 1e-3, 1e-2) for seed in (0, 1)
    }
    # Error falls with the lr up to the top of the grid: round 1 extends up by the grid's decade.
    results = [record(lr, seed, "bracket-0", m) for lr, m in ((1e-4, 0.8), (1e-3, 0.5), (1e-2, 0.2)) for seed in (0, 1)]
    planned = plan_bracket_round(spec, results)
    assert [(t.spec.lr, t.spec.seed, t.phase) for t in planned] == [(0.1, 0, "bracket-1"), (0.1, 1, "bracket-1")]
    # A pair whose round has unfinished trials waits.
    waiting = [*results, {**record(0.1, 0, "bracket-1", math.nan), "status": "pending"}]
    assert plan_bracket_round(spec, waiting) == []
    # 0.1 diverged: 0.01 is inside; round 2 refines between it and 0.001.
    diverged = [record(0.1, seed, "bracket-1", math.nan, status="diverged") for seed in (0, 1)]
    planned = plan_bracket_round(spec, [*results, *diverged])
    assert {t.phase for t in planned} == {"bracket-2"}
    assert [t.spec.lr for t in planned] == pytest.approx([math.sqrt(1e-5)] * 2, rel=5e-6)


def test_bracket_summaries_list_the_lrs_each_round_added_and_why_it_stopped():
    spec = spec_of(bracket_max_lrs=4)
    results = [
        *(record(lr, seed, "bracket-0", m) for lr, m in ((1e-4, 0.8), (1e-3, 0.5), (1e-2, 0.2)) for seed in (0, 1)),
        *(record(0.1, seed, "bracket-1", 0.1) for seed in (0, 1)),
    ]
    (summary,) = bracket_summaries(spec, results)
    assert [(r.round, r.lrs) for r in summary.rounds] == [(0, (1e-4, 1e-3, 1e-2)), (1, (0.1,))]
    assert (summary.lrs_used, summary.trials_used, summary.max_lrs) == (4, 8, 4)
    assert summary.best_lr == 0.1 and math.isnan(summary.window[1]) and summary.window[0] == 1e-2
    assert summary.state.startswith("budget spent: 4 of 4 lrs tried")
    assert plan_bracket_round(spec, results) == []


# --- spec fields ------------------------------------------------------------------------------------------


def spec_error(**fields) -> str:
    with pytest.raises(ValidationError) as info:
        spec_of(**fields)
    return str(info.value)


def test_bracket_fields_are_bounded_with_messages_that_name_them():
    assert "Invalid bracket_max_lrs 1; valid: 2 to 1000" in spec_error(bracket_max_lrs=1)
    assert "Invalid bracket_max_lrs 1001" in spec_error(bracket_max_lrs=1001)
    assert "Invalid bracket_resolution 0.0; valid: 0.01 to 2 decades" in spec_error(bracket_resolution=0.0)
    assert "Invalid bracket_resolution 5.0" in spec_error(bracket_resolution=5.0)
    assert "Invalid bracket_resolution nan" in spec_error(bracket_resolution=float("nan"))
    assert "at least two lrs" in spec_error(lrs=[1e-3])
    # nero's coarse grid is the two lrs and its default 0.01: three do not fit in two.
    assert "bracket_max_lrs 2 is below the coarse grid of 'nero' (3 lrs" in spec_error(bracket_max_lrs=2)
    text = spec_error(lrs={"min": 1e-6, "max": 1.0, "points_per_decade": 10})  # 61 lrs, budget 6
    assert "below the coarse grid of at least 61 lrs" in text


def test_the_trial_count_is_the_worst_case_and_the_limit_says_so():
    spec = spec_of(tasks=["digits-mlp", "text-lm"], optimizers=["nero", "adam"], bracket_max_lrs=10)
    assert spec.trial_count() == 10 * 2 * 2 * 2  # bracket_max_lrs x seeds x optimizers x tasks
    assert spec.bracket_step() == pytest.approx(1.0)
    assert spec_of().bracket_resolution == 0.25 and SweepSpec.model_validate(
        {"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [1e-3, 1e-2], "protocol": "bracket"}
    ).bracket_max_lrs == 12
    text = spec_error(max_trials=11)
    assert "may run up to 12 trials (bracket_max_lrs 6 x 2 seeds x 1 optimizers x 1 tasks)" in text
    assert "limit of 11" in text
