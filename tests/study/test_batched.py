"""Batched-lr execution: stacked members match the same trials run one by one, to float32 rounding."""

from __future__ import annotations

import math

import pytest

from nero_study.study.batched import batched_support, run_batched_group, supports_batched
from nero_study.tasks.base import TrialSpec, run_trial

# lrs a decade apart and two seeds: each member has its own init, data order and per-member optimiser state.
MEMBERS = {
    "nero": [(0.01, 0), (0.03, 1), (0.003, 0)],
    "sgd": [(0.1, 0), (0.3, 1), (0.03, 0)],
    "adam": [(0.001, 0), (0.003, 1), (0.0003, 0)],
    "lamb": [(0.01, 0), (0.03, 1), (0.003, 0)],
    "madam": [(0.01, 0), (0.03, 1), (0.003, 0)],
}
TASKS = ["digits-mlp", "digits-vgg"]


def _events_by_member(specs: list[TrialSpec]) -> dict[int, dict]:
    events: list[dict] = []
    run_batched_group(list(enumerate(specs)), events.append)
    out: dict[int, dict] = {i: {"curve": []} for i in range(len(specs))}
    for event in events:
        if event["event"] == "eval":
            out[event["member"]]["curve"].append(event)
        elif event["event"] == "done":
            out[event["member"]]["done"] = event
    return out


def _assert_same_curve(batched: dict, alone, test_size: int) -> None:
    assert batched["done"]["status"] == alone.status
    assert len(batched["curve"]) == len(alone.curve)
    for got, want in zip(batched["curve"], alone.curve, strict=True):
        assert got["step"] == want.step
        if math.isfinite(want.train_loss):
            assert got["train_loss"] == pytest.approx(want.train_loss, rel=2e-4, abs=1e-5)
        # test error counts wrong answers: float rounding may flip an argmax on at most a near-tie or two
        assert abs(got["metric"] - want.metric) <= 2 / test_size + 1e-12


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("optimizer", list(MEMBERS))
def test_members_match_trials_run_one_by_one(task: str, optimizer: str) -> None:
    specs = [
        TrialSpec(task=task, optimizer=optimizer, lr=lr, seed=seed, budget="smoke") for lr, seed in MEMBERS[optimizer]
    ]
    assert supports_batched(specs)
    batched = _events_by_member(specs)
    for index, spec in enumerate(specs):
        _assert_same_curve(batched[index], run_trial(spec), test_size=357)


def test_a_diverged_member_is_frozen_and_the_others_are_unaffected() -> None:
    specs = [
        TrialSpec(task="digits-mlp", optimizer="adam", lr=0.001, seed=0, budget="smoke"),
        TrialSpec(task="digits-mlp", optimizer="adam", lr=10.0, seed=0, budget="smoke"),
        TrialSpec(task="digits-mlp", optimizer="adam", lr=0.003, seed=1, budget="smoke"),
    ]
    batched = _events_by_member(specs)
    assert batched[1]["done"]["status"] == "diverged"
    assert run_trial(specs[1]).status == "diverged"
    for index in (0, 2):
        _assert_same_curve(batched[index], run_trial(specs[index]), test_size=357)


def test_unbatchable_tasks_and_settings_say_why() -> None:
    assert batched_support(TrialSpec(task="digits-resnet", optimizer="sgd", lr=0.1)) is not None  # batch norm
    assert "no stackable" in batched_support(TrialSpec(task="ppo-cartpole", optimizer="sgd", lr=0.1))
    amsgrad = TrialSpec(task="digits-mlp", optimizer="adam", lr=0.001, hyperparameters={"amsgrad": True})
    assert "no batched form" in batched_support(amsgrad)
    assert batched_support(TrialSpec(task="digits-mlp", optimizer="nero", lr=0.01)) is None
