"""Batched forms of the optimisers: K independent members stacked along a leading dimension.

Used by batched-lr execution (``nero_study.study.batched``): K copies of one model are stacked with
``torch.func.stack_module_state`` and trained together; every tensor here has shape ``(K, *shape)`` where
``shape`` is the member's own parameter shape. Each member has its own learning rate, and every quantity
that the one-model optimiser keeps per tensor, per neuron or per element (Nero's per-neuron second moment
and per-tensor scale, LAMB's per-tensor trust ratio, Madam's per-tensor bound) is kept per member, so a
member's trajectory is the one it would have alone, up to float rounding.

``active`` (bool, shape (K,)) freezes members: a diverged member stops changing, and its NaNs never
reach the others.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from nero_study.optim.functional import parse_constraints


def _per_member(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a (K,) vector to broadcast against a (K, ...) tensor."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def _member_norms(tensor: Tensor) -> Tensor:
    """Euclidean norm of each member's whole tensor: shape (K,)."""
    return torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], -1), dim=1)


def _neuron_norms(tensor: Tensor) -> Tensor:
    """Per-member neuron norms: (K, rows) for member tensors of >1 dims, elementwise |x| otherwise."""
    if tensor.dim() > 2:
        return torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], tensor.shape[1], -1), dim=2)
    return tensor.abs()


class BatchedOptimizer(ABC):
    """Base: stacked parameters, a per-member base lr, and ``step(grads, active, lr_factor)``."""

    #: settings this batched form implements; anything else falls back to packed execution
    supported: frozenset[str] = frozenset()

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        self.params = list(params)
        self.lrs = lrs.to(dtype=self.params[0].dtype if self.params else torch.float32)
        self.settings = dict(settings)
        self.steps = 0

    @classmethod
    def supports(cls, settings: Mapping[str, Any]) -> bool:
        return set(settings) <= cls.supported and cls._supported_values(settings)

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        return True

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], active: Tensor, lr_factor: float = 1.0) -> None:
        """One step for every member; frozen members (``active`` False) keep parameters and state."""
        self.steps += 1
        lrs = self.lrs * lr_factor
        # The usual case, every member live, takes in-place updates; otherwise masked ones.
        mask = None if bool(active.all()) else active
        for index, (param, grad) in enumerate(zip(self.params, grads, strict=True)):
            self._update(index, param, grad, _per_member(lrs, param), mask)

    @abstractmethod
    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        """Update stacked tensor ``index`` in place; ``active`` None means every member is live."""


def _blend_(target: Tensor, new_value: Tensor, active: Tensor | None) -> None:
    """``target <- new_value`` for the active members (all of them when ``active`` is None)."""
    if active is None:
        target.copy_(new_value)
    else:
        target.copy_(torch.where(_per_member(active, target), new_value, target))


class BatchedSGD(BatchedOptimizer):
    """torch.optim.SGD per member (momentum, dampening, nesterov, L2 weight decay)."""

    supported = frozenset({"momentum", "dampening", "weight_decay", "nesterov", "maximize", "foreach"})

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        return not settings.get("maximize", False)

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        super().__init__(params, lrs, settings)
        self.buffers: list[Tensor | None] = [None] * len(self.params)

    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        momentum = float(self.settings.get("momentum", 0.0))
        dampening = float(self.settings.get("dampening", 0.0))
        weight_decay = float(self.settings.get("weight_decay", 0.0))
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        if momentum:
            buffer = self.buffers[index]
            if buffer is None:
                buffer = grad.clone()
            else:
                _blend_(buffer, buffer * momentum + (1 - dampening) * grad, active)
            self.buffers[index] = buffer
            grad = grad.add(buffer, alpha=momentum) if self.settings.get("nesterov", False) else buffer
        if active is None:
            param.addcmul_(grad, lr, value=-1)
        else:
            _blend_(param, param - lr * grad, active)


class BatchedAdam(BatchedOptimizer):
    """torch.optim.Adam per member (bias-corrected moments, L2 weight decay)."""

    supported = frozenset({"betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach"})

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        return not settings.get("amsgrad", False) and not settings.get("maximize", False)

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        super().__init__(params, lrs, settings)
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]

    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        beta1, beta2 = self.settings.get("betas", (0.9, 0.999))
        eps = float(self.settings.get("eps", 1e-8))
        weight_decay = float(self.settings.get("weight_decay", 0.0))
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg, exp_avg_sq = self.exp_avgs[index], self.exp_avg_sqs[index]
        if active is None:
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            _blend_(exp_avg, exp_avg.lerp(grad, 1 - beta1), active)
            _blend_(exp_avg_sq, exp_avg_sq * beta2 + (1 - beta2) * grad * grad, active)
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        if active is None:
            param.addcdiv_(exp_avg * (lr / bias_correction1), denom, value=-1)
        else:
            _blend_(param, param - (lr / bias_correction1) * exp_avg / denom, active)


def _constraints_supported(settings: Mapping[str, Any]) -> bool:
    """Whether ``settings['constraints']`` (absent: off) is a value the optimisers accept."""
    try:
        parse_constraints(settings.get("constraints", False))
    except ValueError:
        return False
    return True


def _constrain_members_(param: Tensor, center: bool, normalize: bool) -> None:
    """Centre and/or normalise every neuron of every member of a stacked tensor whose members are >1-D, in
    place (the constrained LAMB and Madam's projection after a step, per member); a zero neuron stays zero."""
    if param.dim() <= 2 or not (center or normalize):
        return
    rows = param.view(param.shape[0], param.shape[1], -1)
    if center:
        rows.sub_(rows.mean(dim=2, keepdim=True))
    if normalize:
        norms = torch.linalg.vector_norm(rows, dim=2, keepdim=True)
        rows.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


class BatchedLamb(BatchedOptimizer):
    """:class:`nero_study.optim.Lamb` per member: per-tensor trust ratio ``clamp(||w||, 0, 10) / ||r||``,
    then the optional per-neuron constraints (``constraints``, the paper's ``LambCS``)."""

    supported = frozenset({"betas", "eps", "weight_decay", "constraints", "foreach"})

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        return _constraints_supported(settings)

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        super().__init__(params, lrs, settings)
        self.center, self.normalize = parse_constraints(self.settings.get("constraints", False))
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]

    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        beta1, beta2 = self.settings.get("betas", (0.9, 0.999))
        eps = float(self.settings.get("eps", 1e-6))
        weight_decay = float(self.settings.get("weight_decay", 0.0))
        exp_avg, exp_avg_sq = self.exp_avgs[index], self.exp_avg_sqs[index]
        if active is None:
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        else:
            _blend_(exp_avg, exp_avg * beta1 + (1 - beta1) * grad, active)
            _blend_(exp_avg_sq, exp_avg_sq * beta2 + (1 - beta2) * grad * grad, active)
        adam_step = exp_avg / (exp_avg_sq.sqrt() + eps)
        if weight_decay:
            adam_step.add_(param, alpha=weight_decay)
        weight_norm = _member_norms(param).clamp(0, 10)
        step_norm = _member_norms(adam_step)
        trust = torch.where((weight_norm > 0) & (step_norm > 0), weight_norm / step_norm, torch.ones_like(step_norm))
        factor = lr * _per_member(trust, param)
        if active is None:
            param.addcmul_(adam_step, factor, value=-1)
            _constrain_members_(param, self.center, self.normalize)
        else:
            new_value = param - factor * adam_step
            _constrain_members_(new_value, self.center, self.normalize)
            _blend_(param, new_value, active)


class BatchedNero(BatchedOptimizer):
    """:class:`nero_study.optim.Nero` per member: per-neuron second moment, per-tensor scale, projection."""

    supported = frozenset({"beta", "constraints", "foreach"})

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        try:
            parse_constraints(settings.get("constraints", True))
        except ValueError:
            return False
        return True

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        super().__init__(params, lrs, settings)
        self.center, self.normalize = parse_constraints(self.settings.get("constraints", True))
        with torch.no_grad():
            for param in self.params:
                self._project(param)
        # Per member, per tensor: the mean neuron norm after projection (0.01 where that is 0).
        self.scales = []
        for param in self.params:
            mean_norm = _neuron_norms(param).reshape(param.shape[0], -1).mean(dim=1)
            self.scales.append(torch.where(mean_norm > 0, mean_norm, torch.full_like(mean_norm, 0.01)))
        self.exp_avg_sqs = [torch.zeros_like(_neuron_norms(p)) for p in self.params]

    def _project(self, param: Tensor) -> None:
        """Centre and/or normalise every neuron of every member of a stacked >1-D tensor, in place."""
        if param.dim() <= 2 or not (self.center or self.normalize):
            return
        rows = param.view(param.shape[0], param.shape[1], -1)
        if self.center:
            rows.sub_(rows.mean(dim=2, keepdim=True))
        if self.normalize:
            norms = torch.linalg.vector_norm(rows, dim=2, keepdim=True)
            rows.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))

    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        beta = float(self.settings.get("beta", 0.999))
        exp_avg_sq = self.exp_avg_sqs[index]
        if param.dim() > 2:
            grad_sq = grad.reshape(grad.shape[0], grad.shape[1], -1).square().sum(dim=2)
        else:
            grad_sq = grad.square()
        if active is None:
            exp_avg_sq.mul_(beta).add_(grad_sq, alpha=1 - beta)
        else:
            _blend_(exp_avg_sq, exp_avg_sq * beta + (1 - beta) * grad_sq, active)
        denom = (exp_avg_sq / (1 - beta**self.steps)).sqrt_()
        # lr * scale / sqrt(v_hat) per neuron, 0 where v_hat is 0 (0/0 -> 0) and where it is NaN or inf (the
        # reference zeroes the NaNs of g / sqrt(v_hat): x/inf = 0, inf/inf and x/NaN are NaN), then one fused update.
        scale = self.scales[index].reshape(-1, *([1] * (denom.dim() - 1)))
        lr_rows = lr.reshape(lr.shape[0], *([1] * (denom.dim() - 1)))
        finite = denom.isfinite()
        factor = torch.where((denom > 0) & finite, lr_rows * scale / denom, torch.zeros_like(denom))
        if param.dim() > 2:
            factor = factor.reshape(*factor.shape, *([1] * (param.dim() - 2)))
        if not bool(finite.all()):
            # Rare: a neuron whose v is NaN or inf may have NaN or inf in its gradient, and 0 * inf is NaN.
            grad = torch.where(finite.reshape(factor.shape), grad, torch.zeros_like(grad))
        if active is None:
            param.addcmul_(grad, factor, value=-1)
            self._project(param)
        else:
            new_value = param - factor * grad
            self._project(new_value)
            _blend_(param, new_value, active)


class BatchedMadam(BatchedOptimizer):
    """:class:`nero_study.optim.Madam` per member: multiplicative updates, per-tensor bound per member, then
    the optional per-neuron constraints (``constraints``, the paper's ``MadamCS``)."""

    supported = frozenset({"beta", "p_scale", "g_bound", "constraints"})

    @classmethod
    def _supported_values(cls, settings: Mapping[str, Any]) -> bool:
        return _constraints_supported(settings)

    def __init__(self, params: Sequence[Tensor], lrs: Tensor, settings: Mapping[str, Any]) -> None:
        super().__init__(params, lrs, settings)
        self.center, self.normalize = parse_constraints(self.settings.get("constraints", False))
        p_scale = float(self.settings.get("p_scale", 3.0))
        self.bounds = []
        for param in self.params:
            rms = param.reshape(param.shape[0], -1).square().mean(dim=1).sqrt()
            bound = p_scale * rms
            self.bounds.append(torch.where(bound > 0, bound, torch.full_like(bound, 0.01 * p_scale)))
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]

    def _update(self, index: int, param: Tensor, grad: Tensor, lr: Tensor, active: Tensor | None) -> None:
        beta = float(self.settings.get("beta", 0.999))
        g_bound = float(self.settings.get("g_bound", 10.0))
        exp_avg_sq = self.exp_avg_sqs[index]
        if active is None:
            exp_avg_sq.mul_(beta).addcmul_(grad, grad, value=1 - beta)
        else:
            _blend_(exp_avg_sq, exp_avg_sq * beta + (1 - beta) * grad * grad, active)
        denom = (exp_avg_sq / (1 - beta**self.steps)).sqrt_()
        g_normed = torch.where(denom > 0, grad / denom, torch.zeros_like(grad)).clamp_(-g_bound, g_bound)
        bound = _per_member(self.bounds[index], param)
        new_value = param * torch.exp(-lr * g_normed * torch.sign(param))
        new_value = torch.maximum(torch.minimum(new_value, bound), -bound)
        _constrain_members_(new_value, self.center, self.normalize)
        _blend_(param, new_value, active)


BATCHED: dict[str, type[BatchedOptimizer]] = {
    "nero": BatchedNero,
    "sgd": BatchedSGD,
    "adam": BatchedAdam,
    "lamb": BatchedLamb,
    "madam": BatchedMadam,
}


def batched_optimizer_for(name: str, settings: Mapping[str, Any]) -> type[BatchedOptimizer] | None:
    """The batched form of optimiser ``name`` if it implements ``settings``, else None (use packing)."""
    cls = BATCHED.get(name)
    if cls is None or not cls.supports(settings):
        return None
    return cls
