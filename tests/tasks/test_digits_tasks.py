"""The digits proxy tasks, through the public entry point ``run_trial`` (plus the data split and the FD)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from nero_study.data.digits import load_digits_split
from nero_study.tasks import TaskConfigError, TrialSpec, get_task, run_trial
from nero_study.tasks.common import batchnorm_gain_penalty
from nero_study.tasks.digits_gan import (
    _real_test_statistics,
    feature_classifier,
    frechet_distance,
)
from nero_study.tasks.digits_resnet import SmallResNet

DIGITS_TASKS = ["digits-mlp", "digits-vgg", "digits-resnet", "digits-deep-mlp", "digits-gan"]


@pytest.fixture
def float64_default():
    """Models and data in float64 (the digits tasks build both in torch's default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def one_thread():
    """Run on one CPU thread (the budgets are sized for one core); restore the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_digits_are_read_as_scikit_learn_loads_them_without_importing_it():
    from sklearn.datasets import load_digits

    from nero_study.data.digits import _read_digits

    data, target = _read_digits()
    bunch = load_digits()
    assert np.array_equal(data, bunch.data) and np.array_equal(target, bunch.target)
    # A fresh process (a new Ray worker) loads the split without paying scikit-learn's import.
    code = (
        "import sys; from nero_study.data.digits import load_digits_split; load_digits_split(); "
        "print('sklearn' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


def test_digits_split_is_fixed_1440_train_357_test_standardised_with_train_statistics():
    split = load_digits_split()
    assert split.train_x.shape == (1440, 64) and split.test_x.shape == (357, 64)
    assert split.train_y.shape == (1440,) and split.test_y.shape == (357,)
    assert set(split.train_y.tolist()) == set(range(10)) == set(split.test_y.tolist())
    assert 0.0 <= float(split.train_pixels.min()) and float(split.train_pixels.max()) <= 1.0
    assert abs(float(split.train_x.mean())) < 1e-5 and abs(float(split.train_x.std()) - 1) < 1e-5
    assert torch.equal(split.test_x, split.standardise(split.test_pixels))
    # the split is the same whatever the trial's seed: a fixed permutation, cached per process
    torch.manual_seed(123)
    assert load_digits_split() is split
    from sklearn.datasets import load_digits

    all_labels = torch.as_tensor(load_digits().target)
    assert torch.equal(
        torch.bincount(split.train_y) + torch.bincount(split.test_y), torch.bincount(all_labels)
    )


@pytest.mark.parametrize("task", DIGITS_TASKS)
def test_smoke_trial_succeeds_with_a_curve_from_step_0(task, one_thread):
    result = run_trial(TrialSpec(task=task, optimizer="adam", lr=1e-3, budget="smoke"))
    assert result.status == "succeeded", result.error
    assert result.curve[0].step == 0 and math.isnan(result.curve[0].train_loss)
    assert result.curve[-1].step > 0 and math.isfinite(result.curve[-1].train_loss)
    assert [p.step for p in result.curve] == sorted({p.step for p in result.curve})
    assert all(math.isfinite(p.metric) for p in result.curve)
    assert result.metric_name == get_task(task).metric_name
    assert result.initial_metric == result.curve[0].metric


@pytest.mark.parametrize("task", DIGITS_TASKS)
def test_same_spec_gives_identical_curve_and_another_seed_does_not(task, one_thread):
    spec = TrialSpec(task=task, optimizer="nero", lr=0.01, seed=3, budget="smoke")
    first, second = run_trial(spec), run_trial(spec)
    assert first.status == "succeeded", first.error
    assert [p.to_dict() for p in first.curve] == [p.to_dict() for p in second.curve]
    other = run_trial(TrialSpec(task=task, optimizer="nero", lr=0.01, seed=4, budget="smoke"))
    assert [p.to_dict() for p in other.curve] != [p.to_dict() for p in first.curve]


def test_gan_curve_does_not_depend_on_whether_the_feature_classifier_was_cached(one_thread):
    spec = TrialSpec(task="digits-gan", optimizer="adam", lr=1e-3, seed=5, budget="smoke")
    feature_classifier.cache_clear()
    _real_test_statistics.cache_clear()
    cold = run_trial(spec)  # trains the classifier inside the trial
    warm = run_trial(spec)
    assert cold.status == "succeeded", cold.error
    assert [p.to_dict() for p in cold.curve] == [p.to_dict() for p in warm.curve]


@pytest.mark.parametrize(
    ("task", "optimizer", "lr"),
    [(task, "adam", 10.0) for task in DIGITS_TASKS]
    + [("digits-mlp", "sgd", 1e3), ("digits-gan", "sgd", 1e3)],
)
def test_absurd_learning_rate_ends_diverged_early_without_raising(task, optimizer, lr, one_thread):
    result = run_trial(TrialSpec(task=task, optimizer=optimizer, lr=lr, budget="proxy"))
    assert result.status == "diverged", (result.status, result.error)
    assert result.error
    # stopped within the first few steps of a proxy budget of hundreds
    assert result.curve[-1].step <= 5


@pytest.mark.parametrize("task", DIGITS_TASKS)
def test_unknown_task_option_fails_listing_the_valid_ones(task):
    with pytest.raises(TaskConfigError) as error:
        run_trial(TrialSpec(task=task, optimizer="sgd", lr=0.1, budget="smoke", task_options={"nonsense": 1}))
    message = str(error.value)
    assert "nonsense" in message and "valid:" in message
    assert "batch_size" in message and "epochs" in message


@pytest.mark.parametrize(
    ("task", "options"),
    [
        ("digits-mlp", {"depth": 0}),
        ("digits-resnet", {"bn_gain_reg": -1.0}),
        ("digits-deep-mlp", {"lr_decay": 0}),
    ],
)
def test_invalid_task_option_value_fails_naming_it(task, options):
    with pytest.raises(TaskConfigError, match=next(iter(options))):
        run_trial(TrialSpec(task=task, optimizer="sgd", lr=0.1, budget="smoke", task_options=options))


def test_bn_gain_penalty_gradient_on_each_gain_is_2_strength_gain_minus_1():
    torch.manual_seed(0)
    model = SmallResNet(width=4)
    gains = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(gains) == 9  # stem, 2 per block x 3 blocks, the 2 projection shortcuts
    with torch.no_grad():
        for gain in gains:
            gain.copy_(torch.randn_like(gain) + 1)
    strength = 0.3
    batchnorm_gain_penalty(model, strength).backward()
    for gain in gains:
        torch.testing.assert_close(gain.grad, 2 * strength * (gain.detach() - 1))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert convs and all(p.grad is None for m in convs for p in m.parameters())


def test_bn_gain_reg_option_changes_the_resnet_trial(one_thread):
    base = TrialSpec(task="digits-resnet", optimizer="sgd", lr=0.1, budget="smoke")
    plain = run_trial(base)
    regularised = run_trial(
        TrialSpec(
            task="digits-resnet", optimizer="sgd", lr=0.1, budget="smoke", task_options={"bn_gain_reg": 1.0}
        )
    )
    assert plain.status == regularised.status == "succeeded"
    # same seed and data order; the penalty (zero while the gains are 1) enters the loss once they move
    assert regularised.curve[-1].train_loss != plain.curve[-1].train_loss


def test_deep_mlp_paper_budget_is_the_papers_100_layers_and_the_proxy_half_of_them():
    """mnist/100_layer_mlp.py lines 140-145: depth 100, bias, 50 epochs, lr x0.9 per epoch. The proxy keeps
    50 layers for 20 epochs, the depth at which a CPU minute can show the finding (module docstring)."""
    task = get_task("digits-deep-mlp")
    paper, proxy = task.config("paper"), task.config("proxy")
    assert (paper.depth, paper.epochs, paper.lr_decay) == (100, 50, 0.9)
    assert (proxy.depth, proxy.epochs, proxy.lr_decay, proxy.batch_size) == (50, 20, 0.9, 32)
    assert task.config("proxy", {"depth": 12}).depth == 12
    assert "50 layers" in task.describe()["caveat"]


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    generator = torch.Generator().manual_seed(0)
    mean_a, mean_b = (torch.randn(5, generator=generator, dtype=torch.float64) for _ in range(2))
    std_a, std_b = (torch.rand(5, generator=generator, dtype=torch.float64) + 0.1 for _ in range(2))
    expected = float(((mean_a - mean_b) ** 2).sum() + ((std_a - std_b) ** 2).sum())
    got = frechet_distance(mean_a, torch.diag(std_a**2), mean_b, torch.diag(std_b**2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert frechet_distance(mean_a, torch.diag(std_a**2), mean_a, torch.diag(std_a**2)) == pytest.approx(
        0, abs=1e-9
    )


def test_gan_yardstick_classifier_is_accurate_and_real_train_digits_score_far_below_the_untrained_generator(
    one_thread,
):
    split = load_digits_split()
    classifier = feature_classifier()
    accuracy = float((classifier(split.test_x).argmax(1) == split.test_y).float().mean())
    assert accuracy > 0.9
    with torch.no_grad():
        features = classifier.features(split.train_x).double()
    real_mean, real_cov = _real_test_statistics()
    train_vs_test = frechet_distance(real_mean, real_cov, features.mean(0), torch.cov(features.T))
    untrained = run_trial(
        TrialSpec(task="digits-gan", optimizer="sgd", lr=1e-3, budget="smoke")
    ).initial_metric
    assert train_vs_test < 0.05 * untrained


@pytest.mark.slow
@pytest.mark.parametrize("task", DIGITS_TASKS)
@pytest.mark.parametrize(("optimizer", "lr"), [("nero", 0.01), ("sgd", 0.1)])
def test_proxy_budget_succeeds_within_60_seconds_on_one_core(task, optimizer, lr, one_thread):
    result = run_trial(TrialSpec(task=task, optimizer=optimizer, lr=lr, budget="proxy"))
    assert result.status == "succeeded", result.error
    assert result.wall_s <= 60.0
    if task in {"digits-mlp", "digits-vgg", "digits-resnet"}:
        assert result.metric < 0.1  # trained far below chance (0.9)
    if task == "digits-gan":
        assert result.metric < 0.25 * result.initial_metric
    # digits-deep-mlp: its quality bar is the finding itself (test_deep_mlp_proxy_shows_the_papers_finding)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["digits-mlp", "digits-gan"])
def test_proxy_budget_at_a_tiny_learning_rate_barely_moves(task, one_thread):
    result = run_trial(TrialSpec(task=task, optimizer="sgd", lr=1e-4, budget="proxy"))
    assert result.status == "succeeded", result.error
    assert result.metric > 0.9 * result.initial_metric


def test_batched_members_get_the_tasks_own_paper_settings(float64_default: None) -> None:
    """digits-deep-mlp keeps the 100-layer MLP's baselines (Adam betas (0.9, 0.999), mnist/100_layer_mlp.py
    lines 78-85); stacked members get them as a trial run alone does, so both paths agree (float64)."""
    from nero_study.study.batched import batched_support, run_batched_group
    from nero_study.study.protocol import TrialEvaluated, TrialFinished
    from nero_study.tasks.base import optimizer_settings

    assert optimizer_settings(get_task("digits-deep-mlp"), "adam")["model"]["betas"] == (0.9, 0.999)
    specs = [TrialSpec(task="digits-deep-mlp", optimizer="adam", lr=lr, budget="smoke") for lr in (1e-3, 3e-3)]
    assert all(batched_support(spec) is None for spec in specs)
    events: list = []
    run_batched_group(list(enumerate(specs)), events.append)
    for member, spec in enumerate(specs):
        alone = run_trial(spec)
        assert alone.settings["model"]["betas"] == (0.9, 0.999)
        finished = next(e for e in events if isinstance(e, TrialFinished) and e.member == member)
        losses = [e.train_loss for e in events if isinstance(e, TrialEvaluated) and e.member == member]
        assert finished.status == alone.status
        # float64: the stacked and the single model differ only in the order of sums (see test_batched.py)
        assert losses[1:] == pytest.approx([p.train_loss for p in alone.curve][1:], rel=1e-9, abs=0)


@pytest.mark.slow
def test_deep_mlp_proxy_shows_the_papers_finding(one_thread):
    """At the proxy budget Nero trains the 50-layer MLP where Adam with the paper's beta1 = 0.9 stays at chance
    (module docstring: 0.395 against 0.916, seed 0); the margins are far wider than any float noise."""
    nero = run_trial(TrialSpec(task="digits-deep-mlp", optimizer="nero", lr=0.01, budget="proxy"))
    adam = run_trial(TrialSpec(task="digits-deep-mlp", optimizer="adam", lr=1e-3, budget="proxy"))
    assert nero.status == adam.status == "succeeded"
    assert nero.metric < 0.6 < 0.85 < adam.metric


def test_digits_tasks_declare_an_error_rate_on_357_test_images() -> None:
    from nero_study.data.digits import load_digits_split
    from nero_study.tasks.registry import get_task

    for name in ("digits-mlp", "digits-deep-mlp", "digits-resnet", "digits-vgg"):
        task = get_task(name)
        assert task.metric_is_error_rate and task.test_set_size == 357, name
    split = load_digits_split()  # the fixed test split every digits task evaluates on
    assert len(split.test_y) == 357
