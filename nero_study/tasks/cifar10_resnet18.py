"""cifar10-resnet18: ResNet-18 (CIFAR variant, BatchNorm) on CIFAR-10 (Liu et al. 2021).

Evidence (the paper's released code, ``jxbz/nero`` ``cifar/models/resnet.py`` ``resnet18``,
``cifar/train.py`` and the optimiser comparison ``cifar/figure6.sh``):
- model: a 3x3, 64-channel stem (stride 1, no bias) with BatchNorm — and, in the released code, no ReLU
  after it (kept here: ``stem_relu=False``) — then four stages of two basic blocks (3x3 conv, BN, ReLU,
  3x3 conv, BN, plus the shortcut, ReLU) with 64, 128, 256, 512 channels, strides 1, 2, 2, 2, shortcuts
  a 1x1 strided convolution with BN where the shape changes; global average pool; a Linear layer to 10
  classes. Convolutions Kaiming-normal (fan-out, ReLU), BN gains 1 and biases 0. 11,173,962 parameters.
- schedule and data: exactly those of cifar10-vgg11 (199 epochs of batch 128 as ``range(1, 200)`` runs
  them, 5-epoch linear warm-up, x0.2 after 99, 149 and 179 epochs; crop with padding 4, flip, rotation up
  to 15 degrees; no weight decay, no momentum; ``cifar/figure6.sh``).
- metric: top-1 test error (chance 0.9) after every epoch; as for cifar10-vgg11 the script logs the final
  and the best-so-far accuracy and leaves open which the paper reported: the trial's ``metric`` is the
  final epoch's error, ``best_metric`` the best epoch's.

Option ``bn_gain_reg`` (default 0) adds ``bn_gain_reg * sum (gain - 1)^2`` over the BN gains to the loss
(:func:`nero_study.tasks.common.batchnorm_gain_penalty`): a study option for BatchNorm networks, whose
gains Nero leaves unconstrained; the released CIFAR code has no such term, so the paper setting is 0.

Budgets: ``paper`` the above; ``proxy`` the first 5,000/2,000 training/test images, an eighth of the
width (8..64 channels) and the schedule compressed to 4 epochs (as cifar10-vgg11's proxy); ``smoke`` a
few steps of a tiny net.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nero_study.data.cifar10 import CIFAR10_CLASSES, check_cifar10
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.cifar10_vgg11 import Cifar10ClassifierConfig, train_cifar10_classifier
from nero_study.tasks.common import batchnorm_gain_penalty


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN and a (projected where needed) shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, stages of ``blocks`` basic blocks at 1, 2, 4, 8 x ``width``."""

    def __init__(
        self,
        width: int = 64,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = CIFAR10_CLASSES,
        *,
        stem_relu: bool = False,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.stem_relu = stem_relu
        stages: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(blocks):
            out_channels = width * 2**stage
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.stem_relu:
            x = F.relu(x)
        x = self.stages(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@dataclass(frozen=True)
class Cifar10ResNet18Config(Cifar10ClassifierConfig):
    """Adds ``bn_gain_reg``, the strength of the BN-gain penalty (0: off)."""

    bn_gain_reg: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.bn_gain_reg >= 0:
            raise TaskConfigError(f"Invalid bn_gain_reg: {self.bn_gain_reg}; it must be >= 0")


PAPER = Cifar10ResNet18Config()


class Cifar10ResNet18(Task):
    name = "cifar10-resnet18"
    description = (
        "ResNet-18 (CIFAR variant, BatchNorm) on CIFAR-10, the paper's 199-epoch schedule; top-1 test error"
    )
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    kind = "paper"
    default_device = "auto"
    budgets: ClassVar[dict[str, Cifar10ResNet18Config]] = {
        "smoke": dataclasses.replace(PAPER, width=4, epochs=1, batch_size=8, warmup_epochs=0.5, max_steps=3),
        "proxy": dataclasses.replace(
            PAPER,
            width=8,
            epochs=4,
            warmup_epochs=0.1,
            milestones=(2.0, 3.0, 3.6),
            train_limit=5000,
            test_limit=2000,
            evals_per_epoch=2,
        ),
        "paper": PAPER,
    }

    def check_data(self, config: Cifar10ResNet18Config) -> None:
        check_cifar10()

    def train(self, config: Cifar10ResNet18Config, ctx: TrialContext) -> None:
        model = ResNet18Cifar(config.width)
        extra_loss = None
        if config.bn_gain_reg > 0:
            strength = config.bn_gain_reg

            def extra_loss(module: nn.Module) -> torch.Tensor:
                return batchnorm_gain_penalty(module, strength)

        train_cifar10_classifier(ctx, config, model, extra_loss)
