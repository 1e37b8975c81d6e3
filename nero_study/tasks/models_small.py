"""Small models shared by the digits proxy tasks, and a check of their budget configs.

Every model here is initialised by PyTorch's default layer initialisation, drawn from the global torch
generator that :func:`nero_study.tasks.run_trial` seeds with the trial's seed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nero_study.tasks.base import TaskConfigError


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
