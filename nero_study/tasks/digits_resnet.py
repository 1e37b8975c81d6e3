"""digits-resnet: a small ResNet with BatchNorm on scikit-learn's real 8x8 digits (proxy task).

The CPU-minute stand-in for the paper's ResNet-18 on CIFAR-10 (Liu et al. 2021, Fig. 2): a 3x3 conv
stem of ``width`` channels, three stages of one basic residual block each (``width``, ``2 width``,
``4 width`` channels; 8x8 -> 4x4 -> 2x2, 1x1 projection shortcuts where the shape changes), BatchNorm
after every conv, global average pool, Linear to 10 classes; constant learning rate, cross-entropy.
Metric: top-1 error on the fixed 357-image test split (chance 0.9).

``bn_gain_reg`` adds ``bn_gain_reg * sum (gain - 1)^2`` over the BatchNorm gains to the loss: the
regulariser the paper used with Nero on ImageNet, which keeps the (otherwise unconstrained) gains near 1.

Budgets: ``smoke`` a few steps (tests); ``proxy`` 15 epochs of batch 64 (330 steps); ``paper`` is the
proxy with 3x the epochs (the paper's own setting is the cifar10-resnet18 task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nero_study.data.digits import DIGITS_CLASSES, DIGITS_IMAGE_SHAPE, DIGITS_TEST_SIZE, load_digits_split
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.cifar10_resnet18 import BasicBlock  # the same block as the paper's ResNet-18
from nero_study.tasks.common import (
    batchnorm_gain_penalty,
    classification_error,
    steps_per_epoch,
    tensor_batches,
    train_supervised,
)
from nero_study.tasks.models_small import check_positive


class SmallResNet(nn.Module):
    """Stem, three one-block stages (width, 2 width, 4 width), average pool, Linear; flat (N, 64) input."""

    def __init__(self, width: int = 16, classes: int = DIGITS_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(DIGITS_IMAGE_SHAPE[0], width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.stages = nn.Sequential(
            BasicBlock(width, width), BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 4 * width, 2)
        )
        self.classifier = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x.reshape(-1, *DIGITS_IMAGE_SHAPE)))
        return self.classifier(x.mean(dim=(2, 3)))


@dataclass(frozen=True)
class DigitsResNetConfig:
    """``width`` is the stem's channels; ``bn_gain_reg`` the BatchNorm-gain penalty's strength (0 = off)."""

    width: int = 16
    batch_size: int = 64
    epochs: int = 15
    evals_per_epoch: int = 1
    max_steps: int | None = None
    bn_gain_reg: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "width", "batch_size", "epochs", "evals_per_epoch", "max_steps")
        if not (isinstance(self.bn_gain_reg, int | float) and self.bn_gain_reg >= 0):
            raise TaskConfigError(f"Invalid bn_gain_reg: {self.bn_gain_reg!r}; must be a number >= 0")


class DigitsResNet(Task):
    name = "digits-resnet"
    description = "Small ResNet with BatchNorm on scikit-learn's 8x8 digits; test error"
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    test_set_size = DIGITS_TEST_SIZE
    budgets: ClassVar[dict[str, DigitsResNetConfig]] = {
        "smoke": DigitsResNetConfig(width=8, epochs=1, evals_per_epoch=2, max_steps=12),
        "proxy": DigitsResNetConfig(),
        "paper": DigitsResNetConfig(epochs=45),
    }

    def train(self, config: DigitsResNetConfig, ctx: TrialContext) -> None:
        data = load_digits_split()
        model = SmallResNet(config.width)
        test_x, test_y = data.test_x.to(ctx.device), data.test_y.to(ctx.device)
        strength = float(config.bn_gain_reg)
        train_supervised(
            ctx,
            model=model,
            batches=tensor_batches(data.train_x, data.train_y, config.batch_size, ctx.generator),
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch(len(data.train_x), config.batch_size),
            evaluate=lambda: classification_error(model, test_x, test_y),
            evals_per_epoch=config.evals_per_epoch,
            max_steps=config.max_steps,
            extra_loss=(lambda m: batchnorm_gain_penalty(m, strength)) if strength > 0 else None,
        )
