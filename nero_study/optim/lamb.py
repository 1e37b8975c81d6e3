"""LAMB: provisional version; full documented implementation and tests follow."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    def __init__(self, params: Any, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                adam_step = state["exp_avg"] / (state["exp_avg_sq"].sqrt() + group["eps"])
                if group["weight_decay"]:
                    adam_step.add_(p, alpha=group["weight_decay"])
                weight_norm = p.norm().clamp(0, 10)
                adam_norm = adam_step.norm()
                trust = torch.where((weight_norm > 0) & (adam_norm > 0), weight_norm / adam_norm, 1.0)
                p.sub_(group["lr"] * trust * adam_step)
        return loss
