"""Batched-lr execution: stacked members equal the same trials run one by one.

Exact equivalence is checked in float64, where the only difference between the two paths is the order of
floating-point sums (a stacked ``vmap`` matmul vs one matmul per model): each operation's relative error is a
few units of 2^-53 ~ 1.1e-16, and 40 training steps amplify that, even near the stable edge, by far less than
10^6 (largest difference seen: 1.3e-11, nero at lr 1 on digits-vgg at step 40, on an AMD EPYC; measured with
every member of this module). A relative tolerance of 1e-9 therefore holds on any IEEE-754 CPU while a real
difference in the arithmetic (an lr, a state update, a data order off by
one member) shows as a difference of order 1. Test error counts wrong answers out of 357: it changes only where
two logits tie to within ~1e-12, so it must be equal.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from nero_study.study.batched import batched_support, run_batched_group, supports_batched
from nero_study.study.protocol import encode_events
from nero_study.tasks.base import TrialSpec
from nero_study.tasks.runner import run_trial

#: Relative tolerance of float64 equivalence (see the module docstring for where it comes from).
FLOAT64_REL_TOL = 1e-9
#: 40 steps, with evaluations every 11 steps: long enough for part-way divergence, short enough for a test.
OPTIONS = {"max_steps": 40, "epochs": 5}

# lrs a decade apart and two seeds (each member has its own init, data order and optimiser state), plus a
# large lr that diverges on at least one task: on digits-mlp sgd at 3.0 diverges part-way (step 27, after two
# evaluations), nero at 1.0 at step 5; on digits-vgg lamb at 1.0 at step 5.
MEMBERS = {
    "nero": [(0.01, 0), (0.03, 1), (0.003, 0), (1.0, 1)],
    "sgd": [(0.1, 0), (0.3, 1), (0.03, 0), (3.0, 1)],
    "adam": [(0.001, 0), (0.003, 1), (0.0003, 0), (0.1, 1)],
    "lamb": [(0.01, 0), (0.03, 1), (0.003, 0), (1.0, 0)],
    "madam": [(0.01, 0), (0.03, 1), (0.003, 0), (1.0, 1)],
}
TASKS = ["digits-mlp", "digits-vgg"]


@pytest.fixture
def float64() -> Iterator[None]:
    """Models and data in float64 (the digits tasks build both in torch's default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _events_by_member(specs: list[TrialSpec]) -> dict[int, dict]:
    """The batched run's events, as they cross the process boundary (the protocol's wire form)."""
    events: list = []
    run_batched_group(list(enumerate(specs)), events.append)
    out: dict[int, dict] = {i: {"curve": []} for i in range(len(specs))}
    for event in encode_events(events):
        if event["kind"] == "evaluated":
            out[event["member"]]["curve"].append(event)
        elif event["kind"] == "finished":
            out[event["member"]]["done"] = event
    return out


def _assert_equal_in_float64(batched: dict, alone) -> None:
    done = batched["done"]
    assert (done["status"], done["steps"]) == (alone.status, alone.steps), alone.spec
    assert [point["step"] for point in batched["curve"]] == [point.step for point in alone.curve]
    for got, want in zip(batched["curve"], alone.curve, strict=True):
        assert got["metric"] == want.metric, (alone.spec, want.step)
        if math.isfinite(want.train_loss):
            assert got["train_loss"] == pytest.approx(want.train_loss, rel=FLOAT64_REL_TOL, abs=0)
        else:
            assert not math.isfinite(got["train_loss"])


def _specs(task: str, optimizer: str, members: list[tuple[float, int]]) -> list[TrialSpec]:
    return [
        TrialSpec(task=task, optimizer=optimizer, lr=lr, seed=seed, budget="smoke", task_options=OPTIONS)
        for lr, seed in members
    ]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("optimizer", list(MEMBERS))
def test_members_equal_trials_run_one_by_one_in_float64(task: str, optimizer: str, float64: None) -> None:
    specs = _specs(task, optimizer, MEMBERS[optimizer])
    assert supports_batched(specs)
    batched = _events_by_member(specs)
    for index, spec in enumerate(specs):
        _assert_equal_in_float64(batched[index], run_trial(spec))


def test_divergence_is_decided_the_same_across_the_stable_edge(float64: None) -> None:
    """SGD on digits-mlp from well inside to well beyond the stable edge: every member's status, and the step
    at which a diverged member stopped, are those of the same trial run alone."""
    lrs = [0.3, 1.0, 2.0, 3.0, 5.0, 30.0]
    specs = _specs("digits-mlp", "sgd", [(lr, 1) for lr in lrs])
    batched = _events_by_member(specs)
    alone = [run_trial(spec) for spec in specs]
    for index, result in enumerate(alone):
        _assert_equal_in_float64(batched[index], result)
    statuses = {result.status for result in alone}
    assert statuses == {"succeeded", "diverged"}, [(r.spec.lr, r.status) for r in alone]  # the grid spans the edge
    assert any(r.status == "diverged" and len(r.curve) >= 3 for r in alone), "no member diverged part-way"


def test_a_float32_member_takes_its_first_step_as_the_trial_alone() -> None:
    """The production dtype: one step, whose loss is computed from the same initial weights and batch.

    Tolerance: the forward pass sums at most 128 float32 products per output (error <= 128 * 2^-24 ~ 7.6e-6
    relative per layer, in the worst case); over 5 layers and the loss, under 1e-4.
    """
    specs = _specs("digits-mlp", "nero", [(0.01, 0), (0.03, 1)])
    specs = [TrialSpec(**{**spec.to_dict(), "task_options": {"max_steps": 1, "epochs": 1}}) for spec in specs]
    batched = _events_by_member(specs)
    for index, spec in enumerate(specs):
        alone = run_trial(spec)
        assert batched[index]["done"]["status"] == alone.status == "succeeded"
        assert batched[index]["curve"][-1]["train_loss"] == pytest.approx(alone.curve[-1].train_loss, rel=1e-4)


def test_a_diverged_member_is_frozen_and_the_others_are_unaffected(float64: None) -> None:
    specs = _specs("digits-mlp", "adam", [(0.001, 0), (10.0, 0), (0.003, 1)])
    batched = _events_by_member(specs)
    assert batched[1]["done"]["status"] == "diverged"
    for index, spec in enumerate(specs):
        _assert_equal_in_float64(batched[index], run_trial(spec))


def test_unbatchable_tasks_and_settings_say_why() -> None:
    assert batched_support(TrialSpec(task="digits-resnet", optimizer="sgd", lr=0.1)) is not None  # batch norm
    ppo = TrialSpec(task="ppo-cartpole", optimizer="sgd", lr=0.1)
    assert "does not declare batched support" in batched_support(ppo)
    amsgrad = TrialSpec(task="digits-mlp", optimizer="adam", lr=0.001, hyperparameters={"amsgrad": True})
    assert "no batched form" in batched_support(amsgrad)
    assert batched_support(TrialSpec(task="digits-mlp", optimizer="nero", lr=0.01)) is None


def test_auto_execution_is_the_engines_rule_with_its_reasons() -> None:
    from nero_study.study.batched import auto_execution

    def trials(task: str, optimizer: str) -> list[TrialSpec]:
        return [TrialSpec(task=task, optimizer=optimizer, lr=lr) for lr in (0.01, 0.1)]

    stackable = {"nero": trials("digits-mlp", "nero"), "sgd": trials("digits-mlp", "sgd")}
    assert auto_execution(stackable) == ("batched", "the trials of nero, sgd share stacked runs (one per slot)")
    assert supports_batched([spec for group in stackable.values() for spec in group])
    mode, why = auto_execution({"nero": trials("digits-resnet", "nero")})
    assert mode == "packed" and "'digits-resnet' does not declare batched support" in why
    assert auto_execution({"nero": trials("digits-mlp", "nero")[:1]}) == ("packed", "fewer than two trials to stack")
