"""Madam (Bernstein, Zhao, Meister, Liu, Anandkumar & Yue 2020, "Learning compositional functions via
multiplicative weight updates", arXiv 2006.14560), used in the Nero paper's comparison of per-synapse
against per-neuron updates.

Per element, at step t with gradient g:
``v <- beta v + (1 - beta) g^2``; ``g_normed = clamp(g / sqrt(v / (1 - beta^t)), -g_bound, g_bound)``
(0/0 -> 0); ``w <- w * exp(-lr * g_normed * sign(w))``; then ``w`` is clamped to ``+-max`` with
``max = p_scale * sqrt(mean(w^2))`` of the tensor as it was when the optimiser was built (``0.01 * p_scale``
where that is 0).

The update is multiplicative, so a weight never changes sign and a weight that is exactly 0 stays 0.
Defaults (lr 0.01, beta 0.999, p_scale 3, g_bound 10) are those of the authors' code (jxbz/madam, also
``optim/madam.py`` line 27 in jxbz/nero), where beta was fixed at 0.999; here it is a setting.

With ``constraints`` (default off) every neuron (row) of a >1-D tensor is centred and/or given unit norm
after each step, after the clamp: the constrained Madam (``MadamCS``, ``optim/madamcs.py``) of the paper's
constraint ablation (``cifar/figure2.sh``). Like the reference it projects only after steps (never when
built) and keeps the bound ``max`` of the weights as they were built. Centring can flip a weight's sign,
which the multiplicative update then keeps.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import ParamsT

from nero_study.optim import functional
from nero_study.optim.functional import parse_constraints


def _check_settings(lr: Any, beta: Any, p_scale: Any, g_bound: Any, constraints: Any = False) -> None:
    if not (isinstance(lr, numbers.Real) and 0.0 <= lr < math.inf):
        raise ValueError(f"Invalid learning rate: {lr}")
    if not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
        raise ValueError(f"Invalid beta: {beta}")
    if not (isinstance(p_scale, numbers.Real) and 0.0 < p_scale < math.inf):
        raise ValueError(f"Invalid p_scale: {p_scale}")
    if not (isinstance(g_bound, numbers.Real) and 0.0 < g_bound < math.inf):
        raise ValueError(f"Invalid g_bound: {g_bound}")
    parse_constraints(constraints)


class Madam(Optimizer):
    """Madam: multiplicative, per-synapse relative updates with weights bounded by their initial RMS.

    Args:
        params: parameters or param groups (each group may set its own settings).
        lr: relative change of each weight per step (about ``lr`` for a typical element, at most
            ``lr * g_bound`` in log-magnitude).
        beta: decay of the per-element running mean of squared gradients.
        p_scale: bound on each weight's magnitude, in multiples of the tensor's initial RMS.
        g_bound: clamp on the normalised gradient.
        constraints: False/'none' (plain Madam), True/'both' (centre and normalise each neuron after every
            step: the paper's ``MadamCS``), 'mean' or 'norm' (one of the two).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        beta: float = 0.999,
        p_scale: float = 3.0,
        g_bound: float = 10.0,
        constraints: bool | str = False,
    ) -> None:
        _check_settings(lr, beta, p_scale, g_bound, constraints)
        defaults = {"lr": lr, "beta": beta, "p_scale": p_scale, "g_bound": g_bound, "constraints": constraints}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("constraints", False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: validate its settings and record each tensor's bound from its current RMS."""
        settings = {**self.defaults, **{key: value for key, value in param_group.items() if key != "params"}}
        _check_settings(
            settings["lr"], settings["beta"], settings["p_scale"], settings["g_bound"], settings["constraints"]
        )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for param in group["params"]:
            self._init_state(param, group)

    @torch.no_grad()
    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        p_scale = group["p_scale"]
        rms = param.square().mean().sqrt() if param.numel() else param.new_zeros(())
        bound = p_scale * rms
        state = self.state[param]
        state["step"] = torch.tensor(0.0)
        state["max"] = torch.where(bound > 0, bound, torch.full_like(bound, 0.01 * p_scale))
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Madam step for every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, (exp_avg_sqs, max_magnitudes, steps) = functional.gather_group(
                self, group, ("exp_avg_sq", "max", "step"), self._init_state
            )
            if params:
                center, normalize = parse_constraints(group["constraints"])
                functional.madam(
                    params,
                    grads,
                    exp_avg_sqs,
                    max_magnitudes,
                    steps,
                    lr=group["lr"],
                    beta=group["beta"],
                    g_bound=group["g_bound"],
                    center=center,
                    normalize=normalize,
                )
        return loss
