"""digits-vgg: a VGG-style conv net without BatchNorm on scikit-learn's real 8x8 digits (proxy task).

The CPU-minute stand-in for the paper's VGG-11 without BatchNorm on CIFAR-10 (Liu et al. 2021, Fig. 2):
two 3x3 conv stages of ``(width, width)`` and ``(2 width, 2 width)`` channels, ReLU, 2x2 max-pool after
each (8x8 -> 4x4 -> 2x2), then one Linear layer to the 10 classes; PyTorch's default initialisation, no
normalisation, constant learning rate, cross-entropy. Metric: top-1 error on the fixed 357-image test
split (chance 0.9).

Budgets: ``smoke`` a few steps (tests); ``proxy`` 20 epochs of batch 64 (440 steps); ``paper`` is the
proxy with 3x the epochs (the paper's own setting is the cifar10-vgg11 task).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nero_study.data.digits import DIGITS_CLASSES, DIGITS_IMAGE_SHAPE, DIGITS_TEST_SIZE
from nero_study.tasks.base import Task, TrialContext
from nero_study.tasks.common import SupervisedSetup
from nero_study.tasks.models_small import check_positive, digits_setup


class SmallVGG(nn.Module):
    """conv(w) conv(w) pool conv(2w) conv(2w) pool linear, for 1x8x8 inputs given flat (N, 64)."""

    def __init__(self, width: int = 32, classes: int = DIGITS_CLASSES) -> None:
        super().__init__()
        channels, height, _ = DIGITS_IMAGE_SHAPE
        layers: list[nn.Module] = []
        for out_channels in (width, width, "pool", 2 * width, 2 * width, "pool"):
            if out_channels == "pool":
                layers.append(nn.MaxPool2d(2))
                height //= 2
                continue
            layers += [nn.Conv2d(channels, int(out_channels), 3, padding=1), nn.ReLU()]
            channels = int(out_channels)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels * height * height, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *DIGITS_IMAGE_SHAPE)
        return self.classifier(self.features(x).flatten(1))


@dataclass(frozen=True)
class DigitsVGGConfig:
    """``width`` is the first stage's channels (the second has twice as many); ``max_steps`` cuts a run."""

    width: int = 32
    batch_size: int = 64
    epochs: int = 20
    evals_per_epoch: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive(self, "width", "batch_size", "epochs", "evals_per_epoch", "max_steps")


class DigitsVGG(Task):
    name = "digits-vgg"
    description = "VGG-style conv net without BatchNorm on scikit-learn's 8x8 digits; test error"
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    test_set_size = DIGITS_TEST_SIZE
    batchable = True
    budgets: ClassVar[dict[str, DigitsVGGConfig]] = {
        "smoke": DigitsVGGConfig(width=8, epochs=1, evals_per_epoch=2, max_steps=12),
        "proxy": DigitsVGGConfig(),
        "paper": DigitsVGGConfig(epochs=60),
    }

    def supervised_setup(self, config: DigitsVGGConfig) -> SupervisedSetup:
        """The run as data: the same setup trains one model here or K stacked members (batched lrs)."""
        return digits_setup(config, lambda: SmallVGG(config.width))

    def train(self, config: DigitsVGGConfig, ctx: TrialContext) -> None:
        self.supervised_setup(config).run(ctx)
