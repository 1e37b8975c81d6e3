"""Nero (Liu, Bernstein, Meister & Yue 2021, "Learning by Turning", arXiv 2102.07227).

A neuron is one row ``W[i]`` of a parameter with more than one dimension (all dimensions after the first
flattened): one output unit of a Linear, one filter of a Conv, one row of an Embedding. Nero keeps each
neuron centred (zero mean) and at unit norm, and moves it by a per-neuron normalised gradient:

- construction and ``add_param_group``: project each neuron (subtract its mean, divide by its norm) and
  record ``scale`` = mean neuron norm of the tensor (0.01 where that is 0);
- step t: ``v[i] <- beta v[i] + (1 - beta) ||g[i]||^2``,
  ``W[i] <- W[i] - lr * scale * g[i] / sqrt(v[i] / (1 - beta^t))`` (0/0 -> 0), then project again.

So each neuron turns by an angle of about ``lr`` radians per step. Tensors of at most one dimension (biases,
norm gains) get the same update elementwise and are never constrained. The defaults (lr 0.01, beta 0.999,
constraints on) are the paper's out-of-the-box settings (its Algorithm 1 and the authors' code). The
``constraints`` switch covers the paper's ablation: ``'mean'`` only centres, ``'norm'`` only normalises,
``False``/``'none'`` does neither.

The math lives in :mod:`nero_study.optim.functional` (a per-tensor loop and a foreach fast path) and, for
CPU tensors, :mod:`nero_study.optim.fused` (kernels that do each neuron whole while it is in cache).
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
from nero_study.optim import fused as fused_kernel
from nero_study.optim.functional import nero_scale, parse_constraints, project_neurons_


def _check_settings(lr: Any, beta: Any, constraints: Any, foreach: Any, fused: Any = None) -> None:
    if not (isinstance(lr, numbers.Real) and 0.0 <= lr < math.inf):
        raise ValueError(f"Invalid learning rate: {lr}")
    if not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
        raise ValueError(f"Invalid beta: {beta}")
    parse_constraints(constraints)
    if foreach not in (None, True, False):
        raise ValueError(f"Invalid foreach: {foreach!r}; valid: None, True, False")
    if fused not in (None, True, False):
        raise ValueError(f"Invalid fused: {fused!r}; valid: None, True, False")
    if fused and foreach:
        raise ValueError(
            "foreach=True and fused=True together: choose one; valid: fused=True (the kernels), "
            "foreach=True (the foreach path), or neither (the kernels where they apply)"
        )
    if fused and not fused_kernel.available():
        raise ValueError("fused=True needs numba, which does not import here; valid without it: fused=None or False")


def default_foreach(params: list[Tensor]) -> bool:
    """Whether to take the fast path when ``foreach`` is None: yes for CPU and CUDA tensors."""
    return all(param.device.type in ("cpu", "cuda") for param in params)


def default_fused(foreach: bool | None) -> bool:
    """Whether to offer the step to the fused kernels when ``fused`` is None: where numba imports, unless
    ``foreach`` asked for a path (True the foreach path, False the loop). The kernels then take a group only
    if all its tensors are CPU float32/float64 (``fused.can_step``); other groups take the foreach path."""
    return foreach is None and fused_kernel.available()


def _check_fusable(params: list[Tensor]) -> None:
    for param in params:
        if (reason := fused_kernel.why_not(param)) is not None:
            raise RuntimeError(
                f"Nero(fused=True) got {reason}; use fused=None to take the kernel only where it applies"
            )


class Nero(Optimizer):
    """Nero: per-neuron relative updates with neurons kept at zero mean and unit norm.

    Args:
        params: parameters or param groups; each group may set its own ``lr``, ``beta``, ``constraints``.
        lr: angle (radians, roughly) each neuron turns per step.
        beta: decay of the per-neuron running mean of squared gradient norms.
        constraints: True/'both' (centre and normalise each neuron), 'mean' (centre only), 'norm'
            (normalise only), False/'none' (neither).
        foreach: True for the fast path over lists of tensors, False for the per-tensor loop, None to pick
            the fast path for CPU and CUDA tensors.
        fused: True for the CPU kernels of :mod:`nero_study.optim.fused` (each neuron whole while it is in
            cache; CPU tensors of float32 or float64, anything else refused), False never, None
            (the default) for it wherever it applies and numba imports, unless ``foreach`` is given.

    Building Nero changes the weights (the projection), once: rebuilding it on weights that already satisfy
    the constraints leaves them bit-for-bit unchanged, so a checkpoint resumes exactly with
    ``load_state_dict``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.01,
        beta: float = 0.999,
        constraints: bool | str = True,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        _check_settings(lr, beta, constraints, foreach, fused)
        defaults = {"lr": lr, "beta": beta, "constraints": constraints, "foreach": foreach, "fused": fused}
        # Per group, the fused kernels' addresses of the weights and state (not part of the optimizer's state:
        # rebuilt after unpickling, and whenever a weight's storage or a state tensor changes).
        self._fused_plans: dict[int, dict] = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("constraints", True)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
        self._fused_plans = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group: validate its settings, project its neurons and record each tensor's scale."""
        settings = {**self.defaults, **{key: value for key, value in param_group.items() if key != "params"}}
        _check_settings(
            settings["lr"], settings["beta"], settings["constraints"], settings["foreach"], settings["fused"]
        )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for param in group["params"]:
            self._init_state(param, group)

    @torch.no_grad()
    def _init_state(self, param: Tensor, group: dict[str, Any]) -> None:
        if param.is_complex():
            raise ValueError("Nero does not support complex parameters")
        center, normalize = parse_constraints(group["constraints"])
        project_neurons_(param, center, normalize)
        state = self.state[param]
        state["step"] = torch.tensor(0.0)
        state["scale"] = nero_scale(param)
        if param.dim() > 1:
            state["exp_avg_sq"] = param.new_zeros(param.shape[0])
        else:
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Nero step for every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            params, grads, (exp_avg_sqs, scales, steps) = functional.gather_group(
                self, group, ("exp_avg_sq", "scale", "step"), self._init_state
            )
            if not params:
                continue
            center, normalize = parse_constraints(group["constraints"])
            foreach, fused = group["foreach"], group["fused"]
            plans = self._fused_plans.setdefault(index, {})
            if fused is None:
                fused = default_fused(foreach)
            elif fused:
                _check_fusable(params)
            if foreach is None:
                foreach = default_foreach(params)
            functional.nero(
                params,
                grads,
                exp_avg_sqs,
                scales,
                steps,
                lr=group["lr"],
                beta=group["beta"],
                center=center,
                normalize=normalize,
                foreach=foreach,
                fused=fused,
                fused_plans=plans,
            )
        return loss
