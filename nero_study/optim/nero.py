"""Nero (Liu, Bernstein, Meister & Yue 2021): provisional per-tensor loop; fast path and tests follow."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer


def _neuron_norm(x: torch.Tensor) -> torch.Tensor:
    if x.dim() <= 1:
        return x.abs()
    return x.reshape(x.shape[0], -1).norm(dim=1).reshape(x.shape[0], *([1] * (x.dim() - 1)))


def _neuron_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1).reshape(x.shape[0], *([1] * (x.dim() - 1)))


class Nero(Optimizer):
    def __init__(self, params: Any, lr: float = 0.01, beta: float = 0.999, constraints: bool = True,
                 *, foreach: bool | None = None) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta: {beta}")
        super().__init__(params, dict(lr=lr, beta=beta, constraints=constraints, foreach=foreach))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        with torch.no_grad():
            for p in group["params"]:
                if group["constraints"] and p.dim() > 1:
                    p.sub_(_neuron_mean(p))
                    p.div_(_neuron_norm(p))
                scale = _neuron_norm(p).mean()
                self.state[p]["scale"] = scale if scale != 0 else torch.tensor(0.01)
                self.state[p]["step"] = torch.tensor(0.0)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(_neuron_norm(p))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                beta = group["beta"]
                bias_correction = 1 - beta ** state["step"].item()
                state["exp_avg_sq"].mul_(beta).add_((1 - beta) * _neuron_norm(p.grad) ** 2)
                update = p.grad / (state["exp_avg_sq"] / bias_correction).sqrt()
                update = torch.nan_to_num(update, nan=0.0)
                p.sub_(group["lr"] * state["scale"] * update)
                if group["constraints"] and p.dim() > 1:
                    p.sub_(_neuron_mean(p))
                    p.div_(_neuron_norm(p))
        return loss
