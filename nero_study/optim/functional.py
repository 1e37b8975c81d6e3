"""The optimisers' math as plain functions over lists of tensors (torch.optim's functional style).

The optimiser classes (``Nero``, ``Lamb``, ``Madam``) only do bookkeeping: they collect parameters, gradients
and state tensors and call one of these. Each update exists as a per-tensor loop, written to read like the
equations, and (for Nero and LAMB) a fast path over lists of tensors; ``foreach`` chooses between them and the
tests check that they agree in float64.

Neurons: for a tensor with more than one dimension a neuron is one row ``W[i]`` (all dimensions after the
first flattened), e.g. one output unit of a Linear, one filter of a Conv, one row of an Embedding. Tensors of
at most one dimension (biases, norm gains) are handled elementwise and never constrained.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor

from nero_study.optim import fused as fused_kernel

CONSTRAINT_MODES: dict[str, tuple[bool, bool]] = {
    "both": (True, True),
    "mean": (True, False),
    "norm": (False, True),
    "none": (False, False),
}
"""Nero's ``constraints`` values -> (centre each neuron, give each neuron unit norm)."""

_VALID_CONSTRAINTS = "True, False, 'both', 'mean', 'norm', 'none'"

# Rows that already satisfy the constraints to within this many machine epsilons are left bit-for-bit as
# they are when an optimiser is built, so that rebuilding Nero on weights it has trained (to resume from a
# checkpoint) does not move them.
_ALREADY_PROJECTED_ULPS = 64


def gather_group(
    optimizer: torch.optim.Optimizer,
    group: dict,
    keys: tuple[str, ...],
    init_state: Callable[[Tensor, dict], None],
) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
    """The bookkeeping every optimiser's ``step`` shares: the group's parameters that have a gradient, their
    gradients, and per key of ``keys`` the list of that state tensor (``init_state(param, group)`` fills an
    empty state first). Sparse gradients are refused, naming the optimiser."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    states: list[list[Tensor]] = [[] for _ in keys]
    for param in group["params"]:
        if param.grad is None:
            continue
        if param.grad.is_sparse:
            raise RuntimeError(f"{type(optimizer).__name__} does not support sparse gradients")
        state = optimizer.state[param]
        if not state:
            init_state(param, group)
        params.append(param)
        grads.append(param.grad)
        for bucket, key in zip(states, keys, strict=True):
            bucket.append(state[key])
    return params, grads, states


def parse_constraints(constraints: bool | str) -> tuple[bool, bool]:
    """Nero's ``constraints`` setting -> (centre, normalise); invalid values raise ValueError naming them."""
    if constraints is True:
        return CONSTRAINT_MODES["both"]
    if constraints is False:
        return CONSTRAINT_MODES["none"]
    if isinstance(constraints, str) and constraints in CONSTRAINT_MODES:
        return CONSTRAINT_MODES[constraints]
    raise ValueError(f"Invalid constraints: {constraints!r}; valid: {_VALID_CONSTRAINTS}")


def neuron_norms(tensor: Tensor) -> Tensor:
    """Euclidean norm of each neuron: shape (rows,) for a >1-D tensor, elementwise |x| otherwise."""
    if tensor.dim() > 1:
        return torch.linalg.vector_norm(tensor.reshape(tensor.shape[0], -1), dim=1)
    return tensor.abs()


def _project_rows_(rows: Tensor, center: bool, normalize: bool) -> None:
    """Centre and/or normalise each row of a 2-D tensor in place; an all-zero row stays zero."""
    if center:
        rows.sub_(rows.mean(dim=1, keepdim=True))
    if normalize:
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        rows.div_(torch.where(norms > 0, norms, 1.0))


def _writable_rows(param: Tensor) -> tuple[Tensor, Tensor]:
    """A (rows, fan_in) view to update in place, and the tensor it views (a copy if ``param`` has no such view).

    When the second is not ``param`` (e.g. a channels-last conv weight) the caller copies it back.
    """
    work = param if param.is_contiguous() else param.contiguous()
    return work.view(work.shape[0], -1), work


def project_neurons_(param: Tensor, center: bool, normalize: bool) -> None:
    """Nero's projection at construction: centre and/or normalise each neuron of a >1-D tensor in place.

    Rows that already satisfy the constraints (to a few ulps) are left untouched, so projecting a tensor a
    second time changes no bit. 1-D tensors are never constrained.
    """
    if param.dim() <= 1 or not (center or normalize) or param.numel() == 0:
        return
    rows, work = _writable_rows(param)
    tolerance = _ALREADY_PROJECTED_ULPS * torch.finfo(param.dtype).eps
    ok = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    if center:
        ok &= rows.mean(dim=1).abs() <= tolerance * rows.abs().mean(dim=1)
    if normalize:
        ok &= (torch.linalg.vector_norm(rows, dim=1) - 1).abs() <= tolerance
    if bool(ok.all()):
        return
    projected = rows.clone()
    _project_rows_(projected, center, normalize)
    rows.copy_(torch.where(ok.unsqueeze(1), rows, projected))
    if work is not param:
        param.copy_(work)


def nero_scale(param: Tensor) -> Tensor:
    """Nero's per-tensor step scale: the mean neuron norm (0.01 where that is 0), a 0-d tensor like ``param``."""
    scale = neuron_norms(param).mean() if param.numel() else param.new_zeros(())
    return torch.where(scale > 0, scale, torch.full_like(scale, 0.01))


def _bias_corrections(beta: float, steps: list[Tensor]) -> float | list[float]:
    """``1 - beta^t`` per tensor, or one number when all tensors are at the same step (the usual case,
    which saves a per-tensor scalar conversion inside the foreach ops)."""
    # Steps live on the CPU (torch.optim's convention), so reading them is no device sync; the correction
    # is computed in float64 whatever the parameters' dtype.
    corrections = [1.0 - beta ** float(step.item()) for step in steps]
    return corrections[0] if len(set(corrections)) == 1 else corrections


def nero(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scales: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta: float,
    center: bool,
    normalize: bool,
    foreach: bool = False,
    fused: bool = False,
    fused_plans: dict | None = None,
) -> None:
    """One Nero step (Liu et al. 2021, Algorithm 1) for every tensor, in place.

    For each neuron i of a parameter with gradient g, at step t:
    ``v[i] <- beta v[i] + (1 - beta) ||g[i]||^2``,
    ``W[i] <- W[i] - lr * scale * g[i] / sqrt(v[i] / (1 - beta^t))`` (0/0 -> 0),
    then centre (``center``) and/or normalise (``normalize``) each neuron of the >1-D tensors.

    Non-finite values follow the authors' released code, which zeroes every NaN of ``g / sqrt(v_hat)``: a
    neuron whose v is NaN or inf (a NaN or inf in its gradient now or at any earlier step; v stays NaN or inf
    from then on) gets no update, so its weights stay finite (they are still re-projected). One departure:
    where ``||g[i]||^2`` underflows to 0 for a nonzero gradient, the reference divides x by 0 and writes inf
    into the weights; here that neuron's update is 0, as for 0/0.
    ``exp_avg_sqs`` hold v (shape (rows,) for >1-D tensors, the tensor's own shape otherwise), ``scales`` the
    per-tensor 0-d scale and ``steps`` the per-tensor step counts (CPU tensors, incremented here).

    ``fused`` hands the step to the kernels of :mod:`nero_study.optim.fused` (each neuron whole while it is in
    cache) when they take all the tensors (CPU, float32 or float64), else it takes the foreach path;
    ``fused_plans`` is a dict the caller keeps per parameter group, in which the kernels keep the addresses of
    the weights and state from step to step.
    """
    settings = {"lr": lr, "beta": beta, "center": center, "normalize": normalize}
    if any(not param.numel() for param in params):  # nothing to update, and no rows to view
        keep = [i for i, param in enumerate(params) if param.numel()]
        params, grads, exp_avg_sqs, scales, steps = (
            [values[i] for i in keep] for values in (params, grads, exp_avg_sqs, scales, steps)
        )
    if fused and fused_kernel.can_step(params, grads, exp_avg_sqs, scales, steps):
        fused_kernel.nero_step_(params, grads, exp_avg_sqs, scales, steps, plans=fused_plans, **settings)
    elif fused or foreach:
        _nero_foreach(params, grads, exp_avg_sqs, scales, steps, **settings)
    else:
        _nero_loop(params, grads, exp_avg_sqs, scales, steps, **settings)


def _nero_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scales: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta: float,
    center: bool,
    normalize: bool,
) -> None:
    for param, grad, exp_avg_sq, scale, step in zip(params, grads, exp_avg_sqs, scales, steps, strict=True):
        step += 1
        bias_correction = 1.0 - beta ** float(step.item())
        if param.dim() > 1:
            rows, work = _writable_rows(param)
            grad_rows = grad.reshape(grad.shape[0], -1)
            grad_norm = torch.linalg.vector_norm(grad_rows, dim=1)
            exp_avg_sq.mul_(beta).add_(grad_norm * grad_norm, alpha=1 - beta)
            denom = (exp_avg_sq / bias_correction).sqrt().unsqueeze(1)
        else:
            rows, work, grad_rows = param, param, grad
            exp_avg_sq.mul_(beta).addcmul_(grad, grad, value=1 - beta)
            denom = (exp_avg_sq / bias_correction).sqrt()
        # 0/0 -> 0, and no update where v is NaN or inf (the reference's NaN -> 0: x/inf = 0, inf/inf = NaN).
        grad_normed = torch.where((denom > 0) & denom.isfinite(), grad_rows / denom, 0.0)
        rows.sub_(grad_normed * scale, alpha=lr)
        if param.dim() > 1:
            _project_rows_(rows, center, normalize)
            if work is not param:
                param.copy_(work)


def _group_by_device_and_dtype(*tensor_lists: list[Tensor]) -> list[tuple[list[Tensor], ...]]:
    groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], ...]] = defaultdict(
        lambda: tuple([] for _ in tensor_lists)
    )
    for items in zip(*tensor_lists, strict=True):
        key = (items[0].device, items[0].dtype)
        for bucket, item in zip(groups[key], items, strict=True):
            bucket.append(item)
    return list(groups.values())


def _nero_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scales: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta: float,
    center: bool,
    normalize: bool,
) -> None:
    """Fast path: the small per-neuron bookkeeping for all tensors in a few foreach calls, then one fused
    ``addcmul_`` per weight tensor and one ``addcdiv_`` for all 1-D tensors, so each weight is read and
    written once for the update (the loop makes three full-size temporaries)."""
    if not params:
        return
    torch._foreach_add_(steps, 1.0)
    for group in _group_by_device_and_dtype(params, grads, exp_avg_sqs, scales, steps):
        _nero_foreach_one_dtype(*group, lr=lr, beta=beta, center=center, normalize=normalize)


def _select(values: float | list[float], indices: list[int]) -> float | list[float]:
    return values if isinstance(values, float) else [values[i] for i in indices]


def _freeze_nonfinite(
    exp_avg_sqs: list[Tensor], grads: list[Tensor], coefficients: list[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """No update for neurons whose v is NaN or inf (the reference's NaN -> 0), without NaN from 0 * inf.

    ``grads`` are the gradients as the update reads them (rows for >1-D tensors) and ``coefficients`` the
    per-neuron factor or divisor, shaped like v. One check over the small v tensors; only where it finds
    something non-finite are that tensor's gradient (rows) and coefficient replaced by copies holding 0 and 1
    at those neurons, so the update there is exactly 0. The all-finite case returns the lists unchanged.
    """
    if bool(torch.cat([v.reshape(-1) for v in exp_avg_sqs]).isfinite().all()):
        return grads, coefficients
    safe_grads, safe_coefficients = [], []
    for exp_avg_sq, grad, coefficient in zip(exp_avg_sqs, grads, coefficients, strict=True):
        finite = exp_avg_sq.isfinite()
        if bool(finite.all()):
            safe_grads.append(grad)
            safe_coefficients.append(coefficient)
            continue
        safe_coefficients.append(torch.where(finite, coefficient, 1.0))
        safe_grads.append(torch.where(finite.reshape(*finite.shape, *([1] * (grad.dim() - finite.dim()))), grad, 0.0))
    return safe_grads, safe_coefficients


def _nero_foreach_one_dtype(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor],
    scales: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta: float,
    center: bool,
    normalize: bool,
) -> None:
    # Smallest normal number. sqrt(v_hat) / scale is either exactly 0 or far above it (sqrt(v_hat) is at least
    # the square root of the smallest subnormal), so clamping the denominator to it turns 0/0 into
    # 0/tiny = 0 and changes no other value.
    tiny = torch.finfo(params[0].dtype).tiny
    bias_corrections = _bias_corrections(beta, steps)
    matrix = [i for i, param in enumerate(params) if param.dim() > 1]
    elementwise = [i for i, param in enumerate(params) if param.dim() <= 1]

    if elementwise:
        e_params = [params[i] for i in elementwise]
        e_grads = [grads[i] for i in elementwise]
        e_sqs = [exp_avg_sqs[i] for i in elementwise]
        torch._foreach_mul_(e_sqs, beta)
        torch._foreach_addcmul_(e_sqs, e_grads, e_grads, value=1 - beta)
        denoms = torch._foreach_div(e_sqs, _select(bias_corrections, elementwise))
        torch._foreach_sqrt_(denoms)
        torch._foreach_div_(denoms, [scales[i] for i in elementwise])
        torch._foreach_clamp_min_(denoms, tiny)
        e_grads, denoms = _freeze_nonfinite(e_sqs, e_grads, denoms)
        torch._foreach_addcdiv_(e_params, e_grads, denoms, value=-lr)

    if matrix:
        works = [_writable_rows(params[i]) for i in matrix]
        rows = [row_view for row_view, _ in works]
        grad_rows = [grads[i].reshape(grads[i].shape[0], -1) for i in matrix]
        m_sqs = [exp_avg_sqs[i] for i in matrix]
        grad_norms = [torch.linalg.vector_norm(grad_row, dim=1) for grad_row in grad_rows]
        torch._foreach_mul_(m_sqs, beta)
        torch._foreach_addcmul_(m_sqs, grad_norms, grad_norms, value=1 - beta)
        denoms = torch._foreach_div(m_sqs, _select(bias_corrections, matrix))
        torch._foreach_sqrt_(denoms)
        torch._foreach_div_(denoms, [scales[i] for i in matrix])
        torch._foreach_clamp_min_(denoms, tiny)
        # A per-row factor lr * scale / sqrt(v_hat), finite since the denominator is at least `tiny`.
        factors = torch._foreach_reciprocal(denoms)
        grad_rows, factors = _freeze_nonfinite(m_sqs, grad_rows, factors)
        for row_view, grad_row, factor in zip(rows, grad_rows, factors, strict=True):
            row_view.addcmul_(grad_row, factor.unsqueeze(1), value=-lr)
            _project_rows_(row_view, center, normalize)
        for i, (_, work) in zip(matrix, works, strict=True):
            if work is not params[i]:
                params[i].copy_(work)


def lamb(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    foreach: bool = False,
    center: bool = False,
    normalize: bool = False,
) -> None:
    """One LAMB step (You et al. 2019, no bias correction, weight norm clamped to [0, 10]) in place.

    ``m <- beta1 m + (1 - beta1) g``; ``v <- beta2 v + (1 - beta2) g^2``;
    ``r = m / (sqrt(v) + eps) + weight_decay w``; ``trust = min(||w||, 10) / ||r||`` (1 when either norm
    is 0); ``w <- w - lr * trust * r``. Norms are per tensor. Then, with ``center``/``normalize``, each
    neuron of the >1-D tensors is centred and/or given unit norm (the paper's ``LambCS``, see
    :func:`constrain_neurons_`).
    """
    step_fn = _lamb_foreach if foreach else _lamb_loop
    step_fn(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
    )
    constrain_neurons_(params, center, normalize)


def _lamb_loop(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        step += 1
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        adam_step = exp_avg / (exp_avg_sq.sqrt() + eps)
        if weight_decay != 0:
            adam_step.add_(param, alpha=weight_decay)
        weight_norm = torch.linalg.vector_norm(param).clamp(0, 10)
        adam_norm = torch.linalg.vector_norm(adam_step)
        trust = torch.where((weight_norm > 0) & (adam_norm > 0), weight_norm / adam_norm, 1.0)
        param.sub_(adam_step * trust, alpha=lr)


def _lamb_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    if not params:
        return
    torch._foreach_add_(steps, 1.0)
    for p, g, m, v in _group_by_device_and_dtype(params, grads, exp_avgs, exp_avg_sqs):
        torch._foreach_mul_(m, beta1)
        torch._foreach_add_(m, g, alpha=1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
        denoms = torch._foreach_sqrt(v)
        torch._foreach_add_(denoms, eps)
        adam_steps = torch._foreach_div(m, denoms)
        if weight_decay != 0:
            torch._foreach_add_(adam_steps, p, alpha=weight_decay)
        weight_norms = torch.stack(torch._foreach_norm(p)).clamp(0, 10)
        adam_norms = torch.stack(torch._foreach_norm(adam_steps))
        trusts = torch.where((weight_norms > 0) & (adam_norms > 0), weight_norms / adam_norms, 1.0)
        torch._foreach_mul_(adam_steps, list(trusts.unbind()))
        torch._foreach_add_(p, adam_steps, alpha=-lr)


def madam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_magnitudes: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta: float,
    g_bound: float,
    center: bool = False,
    normalize: bool = False,
) -> None:
    """One Madam step (Bernstein et al. 2020) in place, per element:

    ``v <- beta v + (1 - beta) g^2``; ``g_normed = clamp(g / sqrt(v / (1 - beta^t)), -g_bound, g_bound)``
    (0/0 -> 0); ``w <- w * exp(-lr * g_normed * sign(w))``; ``w <- clamp(w, -max, max)``. Then, with
    ``center``/``normalize``, each neuron of the >1-D tensors is centred and/or given unit norm after the
    clamp (the paper's ``MadamCS``, see :func:`constrain_neurons_`).
    """
    for param, grad, exp_avg_sq, max_magnitude, step in zip(
        params, grads, exp_avg_sqs, max_magnitudes, steps, strict=True
    ):
        step += 1
        bias_correction = 1.0 - beta ** float(step.item())
        exp_avg_sq.mul_(beta).addcmul_(grad, grad, value=1 - beta)
        denom = (exp_avg_sq / bias_correction).sqrt()
        grad_normed = torch.where(denom > 0, grad / denom, 0.0).clamp_(-g_bound, g_bound)
        param.mul_(torch.exp(-lr * grad_normed * param.sign()))
        param.clamp_(-max_magnitude, max_magnitude)
    constrain_neurons_(params, center, normalize)


def constrain_neurons_(params: list[Tensor], center: bool, normalize: bool) -> None:
    """After a LAMB or Madam step: centre and/or normalise every neuron of each >1-D tensor, in place.

    The constrained LAMB and Madam of the Nero paper's ablation (``LambCS`` and ``MadamCS`` in the authors'
    ``optim/lambcs.py`` and ``optim/madamcs.py``, run by ``cifar/figure2.sh``) do exactly this after every
    update, and only then: unlike Nero, neither projects the weights when it is built, so the first step
    starts from the initialisation as it is. Tensors of at most one dimension are left alone. One
    departure: a neuron whose weights are all zero stays zero here, where the reference divides 0 by 0.
    """
    if not (center or normalize):
        return
    for param in params:
        if param.dim() <= 1 or param.numel() == 0:
            continue
        rows, work = _writable_rows(param)
        _project_rows_(rows, center, normalize)
        if work is not param:
            param.copy_(work)
