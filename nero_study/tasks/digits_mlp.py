"""digits-mlp: a deep MLP without normalisation on scikit-learn's real 8x8 digits (proxy task).

A CPU-minute stand-in for the paper's networks without normalisation layers (Liu et al. 2021 train
VGG-11 without BatchNorm on CIFAR-10 for the same reason): 64 inputs, 4 hidden ReLU layers of 128, 10
outputs, PyTorch's default initialisation, constant learning rate, cross-entropy. Metric: top-1 error on
the fixed 357-image test split (chance 0.9).

Budgets: ``smoke`` a few steps (tests); ``proxy`` 30 epochs of batch 64 (660 steps, a few seconds on one
core); ``paper`` is the proxy with 3x the epochs (this task has no paper setting of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nero_study.data.digits import DIGITS_CLASSES, DIGITS_FEATURES, DIGITS_TEST_SIZE
from nero_study.tasks.base import Task, TrialContext
from nero_study.tasks.common import SupervisedSetup
from nero_study.tasks.models_small import MLP, check_positive, digits_setup


@dataclass(frozen=True)
class DigitsMLPConfig:
    """``depth`` counts Linear layers (``depth - 1`` hidden layers of ``width``); ``max_steps`` cuts a run."""

    width: int = 128
    depth: int = 5
    batch_size: int = 64
    epochs: int = 30
    evals_per_epoch: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive(self, "width", "depth", "batch_size", "epochs", "evals_per_epoch", "max_steps")


class DigitsMLP(Task):
    name = "digits-mlp"
    description = "Deep MLP (64-128x4-10, ReLU, no normalisation) on scikit-learn's 8x8 digits; test error"
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    test_set_size = DIGITS_TEST_SIZE
    batchable = True
    budgets: ClassVar[dict[str, DigitsMLPConfig]] = {
        "smoke": DigitsMLPConfig(epochs=1, evals_per_epoch=2, max_steps=16),
        "proxy": DigitsMLPConfig(),
        "paper": DigitsMLPConfig(epochs=90),
    }

    def supervised_setup(self, config: DigitsMLPConfig) -> SupervisedSetup:
        """The run as data: the same setup trains one model here or K stacked members (batched lrs)."""
        return digits_setup(config, lambda: MLP(DIGITS_FEATURES, config.width, config.depth, DIGITS_CLASSES))

    def train(self, config: DigitsMLPConfig, ctx: TrialContext) -> None:
        self.supervised_setup(config).run(ctx)
