"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
arXiv 1904.00962) as the Nero paper's experiments used it.

The Nero paper (Liu et al. 2021) compared against the LAMB of its authors' code (``optim/lamb.py`` in the
jxbz/nero repository), itself taken from cybertronai/pytorch-lamb. That version differs from the equations
in the LAMB paper's first version in three documented ways, all kept here:

- no bias correction of the moments (LAMB paper v3 drops it);
- the trust-ratio numerator is the weight norm clamped to [0, 10] (the paper leaves the clamp function
  phi unspecified; pytorch-lamb chose 10);
- eps = 1e-6, added to ``sqrt(v)``.

Per parameter tensor w with gradient g:
``m <- beta1 m + (1 - beta1) g``; ``v <- beta2 v + (1 - beta2) g^2``;
``r = m / (sqrt(v) + eps) + weight_decay * w``;
``trust = min(||w||, 10) / ||r||`` (1 when either norm is 0); ``w <- w - lr * trust * r``.

With ``constraints`` (default off) every neuron (row) of a >1-D tensor is centred and/or given unit norm
after each step: the constrained LAMB (``LambCS``, ``optim/lambcs.py``) of the paper's constraint ablation
(``cifar/figure2.sh``), which projects only after steps, never when built.

Defaults: betas (0.9, 0.999) and eps 1e-6 are pytorch-lamb's (``optim/lamb.py`` line 43); the ``paper``
preset of the registry sets betas (0, 0.999) for the paper's no-momentum comparison. The default lr 0.01 is
this project's choice, not the paper's: the paper defines an out-of-the-box lr only for Nero, and
pytorch-lamb's own default is 1e-3 (``optim/lamb.py`` line 43). 0.01 is Nero's out-of-the-box lr, taken
for LAMB because both make relative updates (per layer, per neuron) of about ``lr`` per step. The registry
says where every optimiser's default comes from (``OptimizerInfo.default_lr_source``).
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
from nero_study.optim.nero import default_foreach


def _check_settings(lr: Any, betas: Any, eps: Any, weight_decay: Any, foreach: Any, constraints: Any = False) -> None:
    if not (isinstance(lr, numbers.Real) and 0.0 <= lr < math.inf):
        raise ValueError(f"Invalid learning rate: {lr}")
    if not (isinstance(betas, tuple | list) and len(betas) == 2):
        raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)")
    for index, beta in enumerate(betas):
        if not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
    if not (isinstance(eps, numbers.Real) and 0.0 <= eps < math.inf):
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not (isinstance(weight_decay, numbers.Real) and 0.0 <= weight_decay < math.inf):
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if foreach not in (None, True, False):
        raise ValueError(f"Invalid foreach: {foreach!r}; valid: None, True, False")
    parse_constraints(constraints)


class Lamb(Optimizer):
    """LAMB as in the Nero paper's experiments: layer-wise trust ratio, no bias correction.

    Args:
        params: parameters or param groups (each group may set its own settings).
        lr: step size; each tensor moves by about ``lr * min(||w||, 10)`` per step.
        betas: decays of the first and second moments.
        eps: added to ``sqrt(v)``.
        weight_decay: L2 coefficient added to the Adam step before the trust ratio.
        constraints: False/'none' (plain LAMB), True/'both' (centre and normalise each neuron after every
            step: the paper's ``LambCS``), 'mean' or 'norm' (one of the two).
        foreach: True for the fast path over lists of tensors, False for the per-tensor loop, None to pick
            the fast path for CPU and CUDA tensors.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        constraints: bool | str = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        _check_settings(lr, betas, eps, weight_decay, foreach, constraints)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "constraints": constraints,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("constraints", False)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after validating its settings."""
        settings = {**self.defaults, **{key: value for key, value in param_group.items() if key != "params"}}
        _check_settings(
            settings["lr"],
            settings["betas"],
            settings["eps"],
            settings["weight_decay"],
            settings["foreach"],
            settings["constraints"],
        )
        super().add_param_group(param_group)

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        """Both moments start at zero; ``step`` only counts (LAMB as used here has no bias correction)."""
        state = self.state[param]
        state["step"] = torch.tensor(0.0)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One LAMB step for every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, (exp_avgs, exp_avg_sqs, steps) = functional.gather_group(
                self, group, ("exp_avg", "exp_avg_sq", "step"), self._init_state
            )
            if not params:
                continue
            beta1, beta2 = group["betas"]
            foreach = group["foreach"]
            if foreach is None:
                foreach = default_foreach(params)
            center, normalize = parse_constraints(group["constraints"])
            functional.lamb(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                foreach=foreach,
                center=center,
                normalize=normalize,
            )
        return loss
