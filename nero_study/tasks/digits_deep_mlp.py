"""digits-deep-mlp: the Nero paper's 100-layer MLP experiment, on scikit-learn's real 8x8 digits (proxy).

The paper (Liu et al. 2021, Fig. 3; ``mnist/100_layer_mlp.py`` in the authors' code) trains on MNIST an
MLP of 100 Linear layers of width 784 (= the input size) with biases, ReLU multiplied by sqrt(2), no
normalisation and PyTorch's default initialisation; batch 250, 50 epochs, lr multiplied by 0.9 after
every epoch; it reports that Nero trains it where the other optimisers struggle.

Here: the same network on digits with width 64 (= the input size), 100 Linear layers, biases, ReLU times
sqrt(2), default initialisation, lr x0.9 per epoch; batch and epochs scaled to a CPU budget. Metric: top-1
error on the fixed 357-image test split (chance 0.9).

Budgets: ``smoke`` 10 layers, a few steps (tests); ``proxy`` 100 layers, batch 32, 10 epochs (450 steps);
``paper`` 100 layers, batch 32, the paper's 50 epochs (the MNIST original is the mnist-mlp100 task).

Measured (one core, seed 0): at the proxy budget no optimiser trains the 100-layer net far (test error
stays 0.84-0.96 for nero 0.01, sgd 0.1, adam 1e-3, lamb 1e-2); 40 constant-lr epochs of nero reach only
about 0.76. With ``depth=20`` the proxy separates them: nero 0.01 reaches 0.07, adam 1e-3 0.19, and
sgd 0.1 stays at 0.92.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from nero_study.data.digits import DIGITS_CLASSES, DIGITS_FEATURES
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import ExponentialSchedule, SupervisedSetup
from nero_study.tasks.models_small import MLP, check_positive, digits_setup


@dataclass(frozen=True)
class DigitsDeepMLPConfig:
    """``depth`` counts Linear layers (the paper's 100); ``lr_decay`` multiplies the lr once per epoch."""

    depth: int = 100
    width: int = 64
    batch_size: int = 32
    epochs: int = 10
    lr_decay: float = 0.9
    evals_per_epoch: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive(self, "depth", "width", "batch_size", "epochs", "evals_per_epoch", "max_steps")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise TaskConfigError(f"Invalid lr_decay: {self.lr_decay!r}; must be in (0, 1]")


class DigitsDeepMLP(Task):
    name = "digits-deep-mlp"
    description = (
        "The paper's 100-layer MLP (ReLU x sqrt 2, no normalisation) on scikit-learn's digits; test error"
    )
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    batchable = True
    budgets: ClassVar[dict[str, DigitsDeepMLPConfig]] = {
        "smoke": DigitsDeepMLPConfig(depth=10, epochs=1, evals_per_epoch=2, max_steps=16),
        "proxy": DigitsDeepMLPConfig(),
        "paper": DigitsDeepMLPConfig(epochs=50),
    }

    def supervised_setup(self, config: DigitsDeepMLPConfig) -> SupervisedSetup:
        """The run as data: the same setup trains one model here or K stacked members (batched lrs)."""
        return digits_setup(
            config,
            lambda: MLP(DIGITS_FEATURES, config.width, config.depth, DIGITS_CLASSES, activation_gain=math.sqrt(2)),
            ExponentialSchedule(config.lr_decay),
        )

    def train(self, config: DigitsDeepMLPConfig, ctx: TrialContext) -> None:
        self.supervised_setup(config).run(ctx)
