"""Small models shared by the digits proxy tasks, and a check of their budget configs.

Every model here is initialised by PyTorch's default layer initialisation, drawn from the global torch
generator that :func:`nero_study.tasks.run_trial` seeds with the trial's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nero_study.data.digits import load_digits_split
from nero_study.tasks.base import TaskConfigError
from nero_study.tasks.common import SupervisedSetup, constant_schedule


class MLP(nn.Module):
    """``depth`` Linear layers (``depth - 1`` hidden layers of ``width``), ReLU times ``activation_gain``.

    No normalisation anywhere. ``activation_gain = sqrt(2)`` is the Nero paper's 100-layer MLP: it keeps
    the second moment of a unit-norm neuron's output equal to its input's through the ReLU.
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int,
        *,
        activation_gain: float = 1.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"Invalid depth: {depth}; an MLP needs at least one Linear layer")
        sizes = [in_features] + [width] * (depth - 1) + [out_features]
        self.layers = nn.ModuleList(
            nn.Linear(fan_in, fan_out, bias=bias)
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation_gain = activation_gain

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (the input of the final Linear layer)."""
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
            if self.activation_gain != 1.0:
                x = x * self.activation_gain
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[-1](self.features(x))


def check_positive(config: Any, *names: str) -> None:
    """Raise :class:`TaskConfigError` naming the field when a budget field that must be > 0 is not."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise TaskConfigError(f"Invalid {name}: {value!r}; must be a positive number")


def digits_setup(
    config: Any, make_model: Callable[[], nn.Module], schedule: Callable[[float], float] | None = None
) -> SupervisedSetup:
    """A digits classifier's run as data (the fixed split, the config's batch, epochs and cadence), shared
    by the stackable digits tasks so that one run and K batched members see the same data and schedule.

    Pixels come in torch's default dtype, like the model's parameters: float32, unless a caller sets another
    (the float64 equivalence tests of batched execution do).
    """
    data = load_digits_split()
    dtype = torch.get_default_dtype()
    return SupervisedSetup(
        make_model=make_model,
        train_x=data.train_x.to(dtype),
        train_y=data.train_y,
        test_x=data.test_x.to(dtype),
        test_y=data.test_y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        evals_per_epoch=config.evals_per_epoch,
        max_steps=config.max_steps,
        schedule=schedule or constant_schedule,
    )
