"""Nero's step for CPU tensors in two numba kernels: each neuron done whole while it is in cache.

The foreach path (:func:`nero_study.optim.functional.nero` with ``foreach=True``) makes six passes over every
weight tensor (the gradient's row norms, the update, the row mean, the centring, the row norm, the division),
each a full trip through memory, and a dozen foreach calls: about three SGD steps of time on CPU. Here each
neuron (row) is finished before the next starts: its gradient is read once for ``||g_i||^2``; the update reads
the weights and, from cache, the gradient again, and sums the new row and its squares as it writes it; one more
pass over the row, in cache, centres and normalises it. So the memory traffic is one SGD step's plus one read
of the gradient. All weight matrices of a step go to one parallel launch (rows split between the threads by
element count), all 1-D tensors to one serial launch: two calls into compiled code per step and dtype.

Arithmetic: the sums are accumulated in float64 whatever the tensor's dtype (``fastmath`` allows only
reassociation and fused multiply-add, so they vectorise; NaN and inf keep their IEEE meaning), and element
updates are done in the tensor's dtype. The centred row's squared norm is ``sum(x^2) - n * mean^2`` from the
same float64 sums rather than a second pass: it loses relative accuracy only as ``sum(x^2) / (n var)`` grows,
i.e. for a row nearly constant before centring, which a centred neuron's update does not make. The tests
compare every path with a float64 reference written from the paper's equations to 1e-10. Non-finite values
and zero rows are handled as the per-tensor loop handles them: a neuron whose ``v_hat`` is 0, NaN or inf gets no
update (it is still projected), and a row whose norm is 0 is left as it is.

numba is imported and the kernels compiled on the first fused step, not on import (about a second per dtype and
number of tensors, cached on disk beside this file or in numba's user cache; a cached load is ~0.4 s). Launches
are serialised by a lock: numba's default thread pool aborts the process when two Python threads launch
parallel kernels at once.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

#: dtypes the kernels are compiled for
SUPPORTED_DTYPES = (torch.float32, torch.float64)

_LOCK = threading.Lock()


def available() -> bool:
    """Whether numba can be imported here (the fused path's only requirement beyond CPU tensors)."""
    try:
        _kernels()
    except ImportError:
        return False
    return True


def supports(tensor: Tensor) -> bool:
    """Whether the kernels take this tensor: a CPU tensor of float32 or float64."""
    return tensor.device.type == "cpu" and tensor.dtype in SUPPORTED_DTYPES


def why_not(tensor: Tensor) -> str | None:
    """Why the kernels do not take ``tensor`` (for ``fused=True`` errors), or None when they do."""
    if tensor.device.type != "cpu":
        return f"a tensor on {tensor.device} (the fused step runs on CPU tensors only)"
    if tensor.dtype not in SUPPORTED_DTYPES:
        allowed = ", ".join(str(dtype) for dtype in SUPPORTED_DTYPES)
        return f"a {tensor.dtype} tensor (the fused step takes {allowed})"
    return None


@functools.cache
def _kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    import numba

    @numba.njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True, nogil=True)
    def matrices(weights, grads, vs, scales, steps, lr, beta, center, normalize, rows, parts):  # noqa: ANN001, ANN202
        # Per tensor t: weights[t] (rows, fan_in), v vs[t] (rows,), 1-element views of its scale and step.
        # rows[r] = (tensor, row) of the r-th row of all tensors; parts[k]:parts[k + 1] are thread k's rows.
        corrections = np.empty(len(weights))
        for t in range(len(weights)):
            steps[t][0] += 1
            corrections[t] = 1.0 - beta ** np.float64(steps[t][0])
        for part in numba.prange(len(parts) - 1):
            for r in range(parts[part], parts[part + 1]):
                t, i = rows[r, 0], rows[r, 1]
                w = weights[t][i]
                g = grads[t][i]
                v = vs[t]
                cast = w.dtype.type
                fan_in = w.shape[0]
                squares = 0.0
                for j in range(fan_in):
                    squares += np.float64(g[j]) * np.float64(g[j])
                v[i] = beta * v[i] + (1.0 - beta) * squares
                v_hat = np.float64(v[i]) / corrections[t]
                total = 0.0
                squares = 0.0
                if v_hat > 0.0 and math.isfinite(v_hat):
                    step = cast(-lr * np.float64(scales[t][0]) / math.sqrt(v_hat))
                    for j in range(fan_in):
                        x = w[j] + step * g[j]
                        w[j] = x
                        total += x
                        squares += np.float64(x) * np.float64(x)
                else:  # 0/0, or v NaN or inf: no update (the reference's NaN -> 0)
                    for j in range(fan_in):
                        total += w[j]
                        squares += np.float64(w[j]) * np.float64(w[j])
                mean = total / fan_in if center else 0.0
                inverse = 1.0
                if normalize:
                    centred = squares - fan_in * mean * mean
                    if centred > 0.0:
                        inverse = 1.0 / math.sqrt(centred)
                if center or inverse != 1.0:
                    shift, factor = cast(mean), cast(inverse)
                    for j in range(fan_in):
                        w[j] = (w[j] - shift) * factor

    @numba.njit(fastmath={"contract"}, cache=True, nogil=True)
    def vectors(weights, grads, vs, scales, steps, lr, beta):  # noqa: ANN001, ANN202
        for t in range(len(weights)):
            steps[t][0] += 1
            correction = 1.0 - beta ** np.float64(steps[t][0])
            w, g, v = weights[t], grads[t], vs[t]
            scale = np.float64(scales[t][0])
            for j in range(w.shape[0]):
                v[j] = beta * v[j] + (1.0 - beta) * (np.float64(g[j]) * np.float64(g[j]))
                v_hat = np.float64(v[j]) / correction
                if v_hat > 0.0 and math.isfinite(v_hat):
                    w[j] = w[j] - w.dtype.type(lr * scale * (g[j] / math.sqrt(v_hat)))

    return matrices, vectors


@functools.lru_cache(maxsize=64)
def _row_plan(row_counts: tuple[int, ...], fan_ins: tuple[int, ...], threads: int) -> tuple[np.ndarray, np.ndarray]:
    """(tensor, row) of every row in order, and where each thread's share starts: equal element counts."""
    rows = np.array([(t, i) for t, count in enumerate(row_counts) for i in range(count)], dtype=np.int64)
    rows = rows.reshape(-1, 2)
    ends = np.cumsum(np.array(fan_ins, dtype=np.int64)[rows[:, 0]])
    total = int(ends[-1]) if len(ends) else 0
    cuts = [int(np.searchsorted(ends, total * k / threads, side="left")) for k in range(1, threads)]
    return rows, np.array([0, *cuts, len(rows)], dtype=np.int64)


class _Plan:
    """The arrays one dtype's kernels read that stay the same from step to step (numpy views of the weights and
    their v, scale and step tensors), kept while the weights' storage and the state tensors are the same."""

    def __init__(self, params: list[Tensor], vs: list[Tensor], scales: list[Tensor], steps: list[Tensor]) -> None:
        self.params, self.vs, self.scales, self.steps = params, vs, scales, steps
        self.key = _storage_key(params)
        self.matrix = [k for k, param in enumerate(params) if param.dim() > 1]
        self.vector = [k for k, param in enumerate(params) if param.dim() <= 1]
        # Non-contiguous weights (e.g. channels-last convolutions) are stepped in contiguous copies, copied back.
        self.works = [param if param.is_contiguous() else param.contiguous() for param in params]
        self.copies = [(param, work) for param, work in zip(params, self.works, strict=True) if work is not param]
        self.m_weights = tuple(self.works[k].detach().view(params[k].shape[0], -1).numpy() for k in self.matrix)
        self.e_weights = tuple(self.works[k].detach().view(-1).numpy() for k in self.vector)
        self.shapes = (tuple(w.shape[0] for w in self.m_weights), tuple(w.shape[1] for w in self.m_weights))
        self.m_state = tuple(_state_views(vs, scales, steps, self.matrix))
        self.e_state = tuple(_state_views(vs, scales, steps, self.vector))

    def holds(self, params: list[Tensor], vs: list[Tensor], scales: list[Tensor], steps: list[Tensor]) -> bool:
        """Whether this plan is still right for these tensors (copies are made again every step)."""
        if self.copies or len(params) != len(self.params):
            return False
        for mine, theirs in ((self.params, params), (self.vs, vs), (self.scales, scales), (self.steps, steps)):
            if any(a is not b for a, b in zip(mine, theirs, strict=True)):
                return False
        return _storage_key(params) == self.key


def _storage_key(params: list[Tensor]) -> list[tuple[int, torch.Size]]:
    return [(param.data_ptr(), param.shape) for param in params]


def _state_views(
    vs: list[Tensor], scales: list[Tensor], steps: list[Tensor], indices: list[int]
) -> tuple[tuple[np.ndarray, ...], ...]:
    return (
        tuple(vs[k].view(-1).numpy() for k in indices),
        tuple(scales[k].view(1).numpy() for k in indices),
        tuple(steps[k].view(1).numpy() for k in indices),
    )


def can_step(
    params: Sequence[Tensor], exp_avg_sqs: Sequence[Tensor], scales: Sequence[Tensor], steps: Sequence[Tensor]
) -> bool:
    """Whether :func:`nero_step_` takes these tensors: all on CPU in float32 or float64, none empty, with
    Nero's state as Nero makes it (v of the weight's dtype, contiguous; a 0-d scale of its dtype; a 0-d
    float32 step)."""
    for param, v, scale, step in zip(params, exp_avg_sqs, scales, steps, strict=True):
        if not supports(param) or not param.numel():
            return False
        if v.dtype != param.dtype or not v.is_contiguous() or v.device.type != "cpu":
            return False
        if scale.dtype != param.dtype or scale.numel() != 1 or step.dtype != torch.float32 or step.numel() != 1:
            return False
    return True


def nero_step_(
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
    plans: dict[torch.dtype, _Plan] | None = None,
) -> None:
    """One Nero step in place, step counts included, for tensors :func:`can_step` takes (see the module's
    docstring). ``plans`` (one dict per parameter group, kept by the caller) saves rebuilding the views of
    the weights and their state every step."""
    matrices, vectors = _kernels()
    plans = {} if plans is None else plans
    by_dtype: dict[torch.dtype, list[int]] = {}
    for k, param in enumerate(params):
        by_dtype.setdefault(param.dtype, []).append(k)
    for dtype, indices in by_dtype.items():
        lists = (params, grads, exp_avg_sqs, scales, steps)
        if len(by_dtype) > 1:
            lists = tuple([values[k] for k in indices] for values in lists)
        d_params, d_grads, d_vs, d_scales, d_steps = lists
        plan = plans.get(dtype)
        if plan is None or not plan.holds(d_params, d_vs, d_scales, d_steps):
            plan = plans[dtype] = _Plan(d_params, d_vs, d_scales, d_steps)
        with _LOCK:
            if plan.matrix:
                threads = _set_threads()
                rows, parts = _row_plan(*plan.shapes, threads)
                m_grads = tuple(_grad_view(d_grads[k], matrix=True) for k in plan.matrix)
                matrices(
                    plan.m_weights,
                    m_grads,
                    *plan.m_state,
                    float(lr),
                    float(beta),
                    bool(center),
                    bool(normalize),
                    rows,
                    parts,
                )
            if plan.vector:
                e_grads = tuple(_grad_view(d_grads[k], matrix=False) for k in plan.vector)
                vectors(plan.e_weights, e_grads, *plan.e_state, float(lr), float(beta))
        for param, work in plan.copies:
            param.copy_(work)


def _grad_view(grad: Tensor, *, matrix: bool) -> np.ndarray:
    rows = grad.reshape(grad.shape[0], -1) if matrix else grad.reshape(-1)
    return (rows if rows.is_contiguous() else rows.contiguous()).numpy()


_THREADS = threading.local()


def _set_threads() -> int:
    """As many kernel threads as torch uses for its own CPU ops (``torch.set_num_threads``); returns it. numba's
    setting is per calling thread, and so is the record of what it was last set to."""
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if getattr(_THREADS, "value", None) != threads:
        numba.set_num_threads(threads)
        _THREADS.value = threads
    return threads
