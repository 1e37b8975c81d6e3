"""cifar10-vgg11: VGG-11 without BatchNorm on CIFAR-10 (Liu et al. 2021, "Learning by Turning").

Evidence (the paper's released code, ``jxbz/nero`` ``cifar/``, adapted from ``weiaicunzai/pytorch-cifar100``):
- model (``cifar/models/vgg.py``, ``vgg11``): configuration "A" convolutions 64, M, 128, M, 256, 256, M,
  512, 512, M, 512, 512, M (3x3, padding 1, no bias, ReLU, no normalisation), then a classifier
  512 -> 4096 -> 4096 -> 10 with ReLU and dropout 0.5; convolutions initialised Kaiming-normal
  (fan-out, ReLU), Linear layers PyTorch's default. 28,141,258 parameters at the paper's size (the
  4096-wide classifier holds 18.9M of them; the convolutions 9.2M).
- schedule (``cifar/conf/global_settings.py`` lines 22-23, ``cifar/train.py`` lines 225-283): batch 128
  (``--b 128``) for **199** epochs: ``EPOCH = 200`` but the loop is ``for epoch in range(1, EPOCH)``. The
  first 5 epochs warm up linearly per step (``--warm 5``, ``WarmUpLR``, stepped *before* each batch, so
  step ``s`` of the warm-up uses ``lr * (s + 1) / (W + 1e-8)`` with W = 5 x 391 steps and the last one
  the full lr). Then ``MultiStepLR(milestones=[100, 150, 180], gamma=0.2).step(epoch)`` with the 1-based
  epoch number multiplies the lr by 0.2 from epochs 100, 150 and 180 on, i.e. after 99, 149 and 179
  epochs of training: ``milestones`` here count finished epochs (99, 149, 179). No weight decay and no
  momentum in the paper's optimiser comparison (``cifar/figure6.sh``: ``--wd 0.0 --momentum 0.0``, lrs
  1e-4 .. 1) and Adam/LAMB betas (``--momentum``, ``--beta``) = (0, 0.999): the registry's paper preset.
- data (``cifar/utils.py``, ``get_training_dataloader`` with ``da=True``): random crop 32 after zero
  padding 4, horizontal flip, and a random rotation of up to 15 degrees (``RandomRotation(15)``, present in
  the released code though the paper's text mentions only crop and flip: ``rotation_degrees``, 0 turns
  it off); normalisation by mean (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010); the last
  partial batch kept (391 steps per epoch).
- metric: top-1 error on the 10,000 test images, evaluated every epoch (chance 0.9), the curve the
  script logs as ``Test/Accuracy``. It also logs the best so far (``Test/Best Accuracy``) and leaves open
  which of the two the paper's figures and table used; the trial's ``metric`` is the final epoch's error
  and its ``best_metric`` the best epoch's.

Budgets: ``paper`` the settings above; ``proxy`` a CPU-feasible reduction: the first 5,000 training and
2,000 test images, a quarter of the width (16..128 channels, 256-wide classifier) and the same schedule
compressed to 4 epochs (warm-up 0.1 epoch, x0.2 from epochs 2, 3, 3.6 on; a milestone may fall inside an
epoch); ``smoke`` a few steps of a tiny net for the tests. Data: CIFAR-10's python batches under ``NERO_STUDY_DATA_DIR``
(:mod:`nero_study.data.cifar10`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from nero_study.data.cifar10 import (
    CIFAR10_CLASSES,
    Augmentation,
    augmented_batches,
    check_cifar10,
    load_cifar10,
    normalize,
    steps_per_epoch_keep_last,
    to_unit_range,
)
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import classification_error, train_supervised

# VGG-11 ("configuration A"): channel multiples of ``width`` per 3x3 convolution, "M" a 2x2 max-pool.
VGG11_LAYERS: tuple[int | str, ...] = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


class VGG11(nn.Module):
    """VGG-11 for 32x32 images, no normalisation: ``width`` is the first convolution's channels (64).

    Five max-pools take 32x32 to 1x1, so the classifier sees ``8 * width`` features.
    """

    def __init__(
        self,
        width: int = 64,
        classifier_width: int = 4096,
        num_classes: int = CIFAR10_CLASSES,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG11_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_channels = int(item) * width
            layers += [nn.Conv2d(channels, out_channels, kernel_size=3, padding=1, bias=False), nn.ReLU()]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels, classifier_width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(classifier_width, classifier_width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(classifier_width, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _check_fields(config: Any, positive: tuple[str, ...], non_negative: tuple[str, ...] = ()) -> None:
    """TaskConfigError naming the first field that is not > 0 (``positive``) or >= 0 (``non_negative``)."""
    for name in positive:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise TaskConfigError(f"Invalid {name}: {value}; it must be positive")
    for name in non_negative:
        value = getattr(config, name)
        if value is not None and not value >= 0:
            raise TaskConfigError(f"Invalid {name}: {value}; it must be >= 0")


@dataclass(frozen=True)
class WarmupMultiStepSchedule:
    """The lr factor of the paper's CIFAR-10 script at a step's position ``epoch`` (step / steps per epoch).

    Warm-up (``WarmUpLR`` stepped before each batch): ``(s + 1) / (W + 1e-8)`` for the first
    ``W = warmup_epochs * steps_per_epoch`` steps ``s``; afterwards ``gamma`` to the number of
    ``milestones`` (counted in finished epochs) that ``epoch`` has reached.
    """

    warmup_epochs: float
    milestones: tuple[float, ...]
    gamma: float
    steps_per_epoch: int

    def __call__(self, epoch: float) -> float:
        step = round(epoch * self.steps_per_epoch)
        warmup_steps = round(self.warmup_epochs * self.steps_per_epoch)
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1e-8)
        return self.gamma ** sum(1 for milestone in self.milestones if epoch >= milestone)


@dataclass(frozen=True)
class Cifar10ClassifierConfig:
    """The CIFAR-10 classification schedule shared by VGG-11 and ResNet-18 (epochs as units of time).

    ``width`` is the network's base channel count; ``train_limit``/``test_limit`` keep the first images
    only; ``max_steps`` cuts a run short (smoke budgets).
    """

    width: int = 64
    epochs: int = 199
    batch_size: int = 128
    warmup_epochs: float = 5.0
    milestones: tuple[float, ...] = (99.0, 149.0, 179.0)
    lr_gamma: float = 0.2
    crop_padding: int = 4
    flip: bool = True
    rotation_degrees: float = 15.0
    train_limit: int | None = None
    test_limit: int | None = None
    evals_per_epoch: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        _check_fields(
            self,
            (
                "width",
                "epochs",
                "batch_size",
                "lr_gamma",
                "train_limit",
                "test_limit",
                "evals_per_epoch",
                "max_steps",
            ),
            ("warmup_epochs", "crop_padding", "rotation_degrees"),
        )


@dataclass(frozen=True)
class Cifar10VGG11Config(Cifar10ClassifierConfig):
    """Adds the classifier's hidden width (4096) and dropout probability (0.5)."""

    classifier_width: int = 4096
    dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fields(self, ("classifier_width",))
        if not 0 <= self.dropout < 1:
            raise TaskConfigError(f"Invalid dropout: {self.dropout}; it must lie in [0, 1)")


def train_cifar10_classifier(
    ctx: TrialContext,
    config: Cifar10ClassifierConfig,
    model: nn.Module,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> None:
    """Train ``model`` on CIFAR-10 under ``config``'s schedule; metric top-1 test error in [0, 1].

    Images stay ``uint8`` on the training device and are augmented there batch by batch.
    """
    data = load_cifar10(train_limit=config.train_limit, test_limit=config.test_limit)
    device = ctx.device
    train_images = data.train_images.to(device)
    train_labels = data.train_labels.to(device)
    test_x = normalize(to_unit_range(data.test_images.to(device)))
    test_y = data.test_labels.to(device)
    augmentation = Augmentation(config.crop_padding, config.flip, config.rotation_degrees)
    steps_per_epoch = steps_per_epoch_keep_last(len(train_images), config.batch_size)
    train_supervised(
        ctx,
        model=model,
        batches=augmented_batches(
            train_images,
            train_labels,
            batch_size=config.batch_size,
            generator=ctx.generator,
            augmentation=augmentation,
        ),
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        evaluate=lambda: classification_error(model, test_x, test_y),
        schedule=WarmupMultiStepSchedule(config.warmup_epochs, config.milestones, config.lr_gamma, steps_per_epoch),
        evals_per_epoch=config.evals_per_epoch,
        extra_loss=extra_loss,
        max_steps=config.max_steps,
    )


PAPER = Cifar10VGG11Config()


class Cifar10VGG11(Task):
    name = "cifar10-vgg11"
    description = "VGG-11 without BatchNorm on CIFAR-10, the paper's 199-epoch schedule; top-1 test error"
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    kind = "paper"
    default_device = "auto"
    budgets: ClassVar[dict[str, Cifar10VGG11Config]] = {
        "smoke": dataclasses.replace(
            PAPER, width=4, classifier_width=16, epochs=1, batch_size=8, warmup_epochs=0.5, max_steps=3
        ),
        "proxy": dataclasses.replace(
            PAPER,
            width=16,
            classifier_width=256,
            epochs=4,
            warmup_epochs=0.1,
            milestones=(2.0, 3.0, 3.6),
            train_limit=5000,
            test_limit=2000,
            evals_per_epoch=2,
        ),
        "paper": PAPER,
    }

    def check_data(self, config: Cifar10VGG11Config) -> None:
        check_cifar10()

    def train(self, config: Cifar10VGG11Config, ctx: TrialContext) -> None:
        model = VGG11(config.width, config.classifier_width, CIFAR10_CLASSES, config.dropout)
        train_cifar10_classifier(ctx, config, model)
