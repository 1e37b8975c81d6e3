"""mnist-mlp100: a 100-layer perceptron without normalisation on MNIST (Liu et al. 2021).

Evidence (the paper's released code, ``jxbz/nero`` ``mnist/100_layer_mlp.py``):
- model: depth 100 counting Linear layers — 784 -> 784, 98 hidden 784 -> 784, 784 -> 10 (width 784) —
  all with biases, each but the last followed by ``relu(x) * sqrt(2)``; PyTorch's default Linear
  initialisation; no normalisation anywhere.
- data: MNIST's 60,000 training and 10,000 test images flattened to 784 values, normalised by mean 0.1307
  and standard deviation 0.3081; no augmentation.
- schedule: 50 epochs of batch 250 (240 steps per epoch), learning rate times 0.9 after every epoch
  (``LambdaLR(0.9 ** epoch)``, here :class:`nero_study.tasks.common.ExponentialSchedule`).
- metric: top-1 test error (chance 0.9); the paper's code measured it once at the end (the number its
  figure shows), here after every epoch as well; the trial's ``metric`` is that final error.
- optimisers (``train_network``, lines 78-85): ``Nero(lr)``, ``Lamb(lr)``, ``torch.optim.Adam(lr)`` and
  ``torch.optim.SGD(lr)``, i.e. each library's defaults: Adam betas (0.9, 0.999) eps 1e-8, LAMB betas
  (0.9, 0.999) eps 1e-6 (``optim/lamb.py`` line 43), SGD without momentum, Nero beta 0.999. Unlike the
  paper's other tasks, Adam and LAMB had momentum here: the task's ``paper_settings`` give them
  beta1 = 0.9 under the ``paper`` preset.

Budgets: ``paper`` the above; ``proxy`` keeps the depth (the point of the task) at width 128 on the first
10,000 training and 2,000 test images for 5 epochs; ``smoke`` a few steps of a 6-layer, 16-wide net.
Data: MNIST's IDX files under ``NERO_STUDY_DATA_DIR`` (see :mod:`nero_study.data.mnist` for the places).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nero_study.data.mnist import MNIST_CLASSES, flatten_normalized, load_mnist, mnist_files
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import (
    ExponentialSchedule,
    classification_error,
    steps_per_epoch,
    tensor_batches,
    train_supervised,
)

MNIST_PIXELS = 784


class DeepMLP(nn.Module):
    """``depth`` Linear layers (in -> width, ``depth - 2`` x width -> width, width -> classes), scaled ReLU.

    ``relu(x) * activation_gain`` after every layer but the last; ``sqrt(2)`` keeps the second moment of
    the activations through the ReLU, as in the paper.
    """

    def __init__(
        self,
        depth: int = 100,
        width: int = MNIST_PIXELS,
        in_features: int = MNIST_PIXELS,
        num_classes: int = MNIST_CLASSES,
        *,
        bias: bool = True,
        activation_gain: float = math.sqrt(2),
    ) -> None:
        super().__init__()
        if depth < 2:
            raise TaskConfigError(f"Invalid depth: {depth}; the MLP needs at least 2 layers")
        self.activation_gain = activation_gain
        self.initial = nn.Linear(in_features, width, bias=bias)
        self.hidden = nn.ModuleList(nn.Linear(width, width, bias=bias) for _ in range(depth - 2))
        self.final = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.initial(x)) * self.activation_gain
        for layer in self.hidden:
            x = F.relu(layer(x)) * self.activation_gain
        return self.final(x)


@dataclass(frozen=True)
class MnistMLP100Config:
    """``depth`` counts Linear layers; ``lr_decay`` multiplies the lr once per epoch; ``*_limit`` keep the
    first images; ``max_steps`` cuts a run short."""

    depth: int = 100
    width: int = MNIST_PIXELS
    bias: bool = True
    epochs: int = 50
    batch_size: int = 250
    lr_decay: float = 0.9
    train_limit: int | None = None
    test_limit: int | None = None
    evals_per_epoch: int = 1
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "width",
            "epochs",
            "batch_size",
            "train_limit",
            "test_limit",
            "evals_per_epoch",
            "max_steps",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise TaskConfigError(f"Invalid {name}: {value}; it must be positive")
        if self.depth < 2:
            raise TaskConfigError(f"Invalid depth: {self.depth}; it must be at least 2")
        if not 0 < self.lr_decay <= 1:
            raise TaskConfigError(f"Invalid lr_decay: {self.lr_decay}; it must lie in (0, 1]")


PAPER = MnistMLP100Config()


class MnistMLP100(Task):
    name = "mnist-mlp100"
    description = "100-layer MLP (width 784, scaled ReLU, no normalisation) on MNIST; top-1 test error"
    metric_name = "test_error"
    lower_is_better = True
    chance_metric = 0.9
    metric_is_error_rate = True
    kind = "paper"
    default_device = "auto"
    paper_settings: ClassVar[dict[str, dict[str, Any]]] = {
        "adam": {"betas": (0.9, 0.999)},
        "lamb": {"betas": (0.9, 0.999)},
    }
    paper_settings_source = "mnist/100_layer_mlp.py lines 78-85 (library defaults: Adam and LAMB betas (0.9, 0.999))"
    budgets: ClassVar[dict[str, MnistMLP100Config]] = {
        "smoke": dataclasses.replace(PAPER, depth=6, width=16, epochs=1, batch_size=5, max_steps=3),
        "proxy": dataclasses.replace(PAPER, width=128, epochs=5, train_limit=10_000, test_limit=2_000),
        "paper": PAPER,
    }

    def check_data(self, config: MnistMLP100Config) -> None:
        mnist_files()

    def train(self, config: MnistMLP100Config, ctx: TrialContext) -> None:
        data = load_mnist(train_limit=config.train_limit, test_limit=config.test_limit)
        device = ctx.device
        train_x = flatten_normalized(data.train_images).to(device)
        train_y = data.train_labels.to(device)
        test_x = flatten_normalized(data.test_images).to(device)
        test_y = data.test_labels.to(device)
        model = DeepMLP(config.depth, config.width, bias=config.bias)
        train_supervised(
            ctx,
            model=model,
            batches=tensor_batches(train_x, train_y, config.batch_size, ctx.generator),
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch(len(train_x), config.batch_size),
            evaluate=lambda: classification_error(model, test_x, test_y),
            schedule=ExponentialSchedule(config.lr_decay),
            evals_per_epoch=config.evals_per_epoch,
            max_steps=config.max_steps,
        )
