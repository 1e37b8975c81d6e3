"""ppo-cartpole through the public entry point: curve, determinism, chance level, what huge lrs do."""

from __future__ import annotations

import math
import time

import pytest
import torch

from nero_study.tasks import TrialSpec, get_task, run_trial
from nero_study.tasks.ppo_cartpole import random_policy_return

TASK = "ppo-cartpole"


@pytest.fixture(autouse=True)
def one_thread():
    """Run with one torch thread, as sweeps run proxy trials (one core each), restoring the setting after.

    Tiny tensors gain nothing from intra-op threads, and on a loaded machine idle OpenMP threads made a
    PPO smoke run 20x slower (0.3 s -> 7 s).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_smoke_trial_reports_mean_episode_return() -> None:
    result = run_trial(TrialSpec(task=TASK, optimizer="adam", lr=1e-3, budget="smoke"))

    assert result.status == "succeeded", result.error
    assert result.metric_name == "mean episode return"
    assert result.lower_is_better is False
    assert result.curve[0].step == 0 and math.isnan(result.curve[0].train_loss)
    assert result.curve[-1].step == result.steps > 0
    assert math.isfinite(result.curve[-1].train_loss)
    # a CartPole-v1 episode lasts at least a few steps and at most 500, one reward per step
    assert all(8 <= point.metric <= 500 for point in result.curve)
    assert result.wall_s < 30


def test_same_spec_gives_identical_curve() -> None:
    spec = TrialSpec(task=TASK, optimizer="sgd", lr=0.1, seed=5, budget="smoke")
    first, second = run_trial(spec), run_trial(spec)
    other_seed = run_trial(TrialSpec(task=TASK, optimizer="sgd", lr=0.1, seed=6, budget="smoke"))

    assert [p.to_dict() for p in first.curve] == [p.to_dict() for p in second.curve]
    assert [p.to_dict() for p in first.curve] != [p.to_dict() for p in other_seed.curve]


def test_chance_metric_is_the_random_policy_return() -> None:
    # 500 fresh episodes (seeds other than the 2 x 2000 behind the documented 22.2); std of one return ~12
    assert abs(random_policy_return(500, seed=777) - get_task(TASK).chance_metric) < 2.5


def test_non_finite_parameters_end_diverged() -> None:
    # without grad-norm clipping an absurd SGD step overflows the weights to inf, and the loss with them
    result = run_trial(
        TrialSpec(task=TASK, optimizer="sgd", lr=1e30, budget="smoke", task_options={"max_grad_norm": None})
    )

    assert result.status == "diverged"
    assert result.error and ("inf" in result.error or "nan" in result.error or "non-finite" in result.error)
    assert result.curve[0].step == 0


@pytest.mark.parametrize(("optimizer", "lr"), [("adam", 10.0), ("sgd", 1e3)])
def test_huge_lr_ends_diverged_on_the_loss_ceiling(optimizer: str, lr: float) -> None:
    # Grad-norm clipping (0.5) keeps every number finite, but the loss explodes (healthy runs stay near
    # 0.01-1 with rewards scaled into [0, 1]): past the task's ceiling of 100 the trial ends diverged.
    result = run_trial(TrialSpec(task=TASK, optimizer=optimizer, lr=lr, budget="smoke"))

    assert result.status == "diverged", result.error
    assert "ceiling" in result.error


def test_a_good_lr_stays_under_the_loss_ceiling() -> None:
    result = run_trial(TrialSpec(task=TASK, optimizer="adam", lr=1e-3, budget="smoke"))
    assert result.status == "succeeded"
    assert max(p.train_loss for p in result.curve[1:]) < get_task(TASK).divergence_ceiling


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "lr"), [("nero", 0.01), ("sgd", 0.1)])
def test_proxy_budget_trains_within_one_cpu_core_minute(optimizer: str, lr: float) -> None:
    cpu_start = time.process_time()
    result = run_trial(TrialSpec(task=TASK, optimizer=optimizer, lr=lr, budget="proxy"))
    cpu_seconds = time.process_time() - cpu_start

    assert result.status == "succeeded", result.error
    # one thread, so process CPU time is time on one core (wall time also counts other sessions' load)
    assert cpu_seconds <= 60
    assert len(result.curve) >= 5
    assert result.best_metric > 2 * get_task(TASK).chance_metric


def test_paper_budget_is_the_papers_pong_ppo_wherever_it_applies_to_cartpole() -> None:
    """ppo/figure9.sh line 4 and the ppo-pong task: 8 envs x 128 steps, 4 epochs x 4 minibatches, clip 0.1,
    value coefficient 0.5, entropy 0.01, grad-norm clip 0.5, linear decay; ppo/a2c_ppo_acktr/algo/ppo.py
    lines 54-56 (advantages normalised over the rollout, eps 1e-5) and 87-94 (the clipped value loss)."""
    cartpole = get_task(TASK).config("paper")
    pong = get_task("ppo-pong").config("paper")
    assert (cartpole.num_envs, cartpole.rollout_steps) == (pong.num_envs, pong.rollout_steps) == (8, 128)
    assert (cartpole.minibatches, cartpole.update_epochs) == (pong.num_minibatches, pong.ppo_epochs) == (4, 4)
    assert (cartpole.clip, cartpole.value_coef, cartpole.entropy_coef) == (pong.clip, pong.value_loss_coef, 0.01)
    assert (cartpole.gamma, cartpole.gae_lambda, cartpole.max_grad_norm) == (pong.gamma, pong.gae_lambda, 0.5)
    assert cartpole.linear_lr_decay and cartpole.clipped_value_loss and cartpole.advantage_normalization == "rollout"
    assert cartpole.iterations * cartpole.num_envs * cartpole.rollout_steps == 245_760
    proxy = get_task(TASK).config("proxy")
    assert (proxy.clip, proxy.num_envs, proxy.clipped_value_loss, proxy.advantage_normalization) == (
        0.2,
        4,
        False,
        "minibatch",
    )


def test_adam_and_lamb_get_the_papers_ppo_eps() -> None:
    from nero_study.tasks.base import optimizer_settings

    assert optimizer_settings(get_task(TASK), "adam")["model"] == {"betas": (0.0, 0.999), "eps": 1e-5}
    assert optimizer_settings(get_task(TASK), "lamb")["model"] == {"betas": (0.0, 0.999), "eps": 1e-5}


def test_pong_like_options_train_and_change_the_run() -> None:
    plain = TrialSpec(task=TASK, optimizer="adam", lr=1e-3, budget="smoke")
    pong_like = TrialSpec(
        task=TASK,
        optimizer="adam",
        lr=1e-3,
        budget="smoke",
        task_options={"clipped_value_loss": True, "advantage_normalization": "rollout", "clip": 0.1},
    )
    first, again, plain_result = run_trial(pong_like), run_trial(pong_like), run_trial(plain)
    assert first.status == "succeeded", first.error
    assert [p.to_dict() for p in first.curve] == [p.to_dict() for p in again.curve]
    assert first.curve[-1].train_loss != plain_result.curve[-1].train_loss


def test_unknown_advantage_normalisation_fails_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Invalid advantage_normalization: 'batch'; valid: minibatch, rollout"):
        get_task(TASK).config("smoke", {"advantage_normalization": "batch"})


def test_the_listing_carries_the_nero_caveat() -> None:
    description = get_task(TASK).describe()
    assert "zero-mean constraint" in description["caveat"] and "140-180" in description["caveat"]
