"""Nero's step for CPU tensors in two numba kernels: each neuron done whole while it is in cache.

The foreach path (:func:`nero_study.optim.functional.nero` with ``foreach=True``) makes six passes over every
weight tensor (the gradient's row norms, the update, the row mean, the centring, the row norm, the division),
each a full trip through memory, and a dozen foreach calls: about four SGD steps of time on CPU. Here each
neuron (row) is finished before the next starts: its gradient is read once for ``||g_i||^2``; the update reads
the weights and, from cache, the gradient again, and sums the new row and its squares as it writes it; one more
pass over the row, in cache, centres and normalises it. So the memory traffic is one SGD step's plus one read
of the gradient. All weight matrices of a step go to one parallel launch (rows split between the threads by
element count), all 1-D tensors to one serial launch: two calls into compiled code per step and dtype. The
kernels take the tensors by address (``data_ptr()``) with their shapes, so one compilation per dtype serves
any model; the addresses of the weights and state are kept between steps while their storage stays the same.

Arithmetic: the sums are accumulated in float64 whatever the tensor's dtype (``fastmath`` allows only
reassociation and fused multiply-add, so they vectorise; NaN and inf keep their IEEE meaning), and element
updates are done in the tensor's dtype. The centred row's squared norm is ``sum(x^2) - n * mean^2`` from the
same float64 sums rather than a second pass: it loses relative accuracy only as ``sum(x^2) / (n var)`` grows,
i.e. for a row nearly constant before centring, which a centred neuron's update does not make. The tests
compare every path with a float64 reference written from the paper's equations to 1e-10. Non-finite values
and zero rows are handled as the per-tensor loop handles them: a neuron whose ``v_hat`` is 0, NaN or inf gets no
update (it is still projected), and a row whose norm is 0 is left as it is.

numba is imported and the kernels compiled on the first fused step, not on import (a few seconds per dtype,
cached on disk beside this file or in numba's user cache; loading them from there takes well under a second).
Launches are serialised by a lock: numba's default thread pool aborts the process when two Python threads
launch parallel kernels at once.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

#: dtypes the kernels are compiled for
SUPPORTED_DTYPES = (torch.float32, torch.float64)

_LOCK = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether numba can be imported here (the fused path's only requirement beyond CPU tensors); asked once."""
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
def _kernels() -> tuple[Callable[..., None], Callable[..., None], Callable[..., None]]:
    from nero_study.optim import kernels

    return kernels.matrices, kernels.matrices_serial, kernels.vectors


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
    """What one dtype's kernels read that stays the same from step to step (the addresses of the weights and
    of their v, scale and step tensors, and their shapes), kept while the weights' storage and the state
    tensors are the same. Holds the storage behind every address it keeps (detached views), so that none is
    freed while the plan lives, even if a tensor is given other storage (``param.data = ...``)."""

    def __init__(self, params: list[Tensor], vs: list[Tensor], scales: list[Tensor], steps: list[Tensor]) -> None:
        self.params, self.vs, self.scales, self.steps = params, vs, scales, steps
        self.key = _storage_key(params)
        self.matrix = [k for k, param in enumerate(params) if param.dim() > 1]
        self.vector = [k for k, param in enumerate(params) if param.dim() <= 1]
        # Non-contiguous weights (e.g. channels-last convolutions) are stepped in contiguous copies, copied back.
        self.works = [param if param.is_contiguous() else param.contiguous() for param in params]
        self.copies = [(param, work) for param, work in zip(params, self.works, strict=True) if work is not param]
        self.m_at = self._addresses(self.matrix)
        self.e_at = self._addresses(self.vector)
        self.row_counts = tuple(params[k].shape[0] for k in self.matrix)
        self.fan_ins = tuple(params[k].numel() // params[k].shape[0] for k in self.matrix)
        self.m_shapes = np.array(list(zip(self.row_counts, self.fan_ins, strict=True)), dtype=np.int64).reshape(-1, 2)
        self.e_sizes = np.array([params[k].numel() for k in self.vector], dtype=np.int64)
        self.like = np.empty(0, dtype=torch.empty(0, dtype=params[0].dtype).numpy().dtype)
        self.storage = [tensor.detach() for tensor in (*self.works, *vs, *scales, *steps)]

    def _addresses(self, indices: list[int]) -> np.ndarray:
        """Per tensor: weights, gradient (filled in each step), v, scale and step addresses."""
        at = np.zeros((len(indices), 5), dtype=np.int64)
        for row, k in enumerate(indices):
            at[row] = (self.works[k].data_ptr(), 0, self.vs[k].data_ptr(), self.scales[k].data_ptr(),
                       self.steps[k].data_ptr())  # fmt: skip
        return at

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


def can_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    scales: Sequence[Tensor],
    steps: Sequence[Tensor],
) -> bool:
    """Whether :func:`nero_step_` takes these tensors: all on CPU in float32 or float64, none empty, gradients
    of their weights' dtype and shape, and Nero's state as Nero makes it (contiguous v of the weight's dtype;
    a one-element scale of its dtype; a one-element float32 step), all on CPU."""
    for param, grad, v, scale, step in zip(params, grads, exp_avg_sqs, scales, steps, strict=True):
        if not supports(param) or not param.numel():
            return False
        if grad.dtype != param.dtype or grad.shape != param.shape or grad.device.type != "cpu":
            return False
        if v.dtype != param.dtype or not v.is_contiguous() or v.device.type != "cpu":
            return False
        if scale.dtype != param.dtype or scale.numel() != 1 or scale.device.type != "cpu":
            return False
        if step.dtype != torch.float32 or step.numel() != 1 or step.device.type != "cpu":
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
    docstring). ``plans`` (one dict per parameter group, kept by the caller) saves collecting the addresses
    of the weights and their state every step."""
    matrices, matrices_serial, vectors = _kernels()
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
        # Gradients as contiguous tensors (kept referenced here until the kernels have run).
        contiguous = [grad if grad.is_contiguous() else grad.contiguous() for grad in d_grads]
        with _LOCK:
            if plan.matrix:
                threads = _set_threads()
                rows, parts = _row_plan(plan.row_counts, plan.fan_ins, threads)
                plan.m_at[:, 1] = [contiguous[k].data_ptr() for k in plan.matrix]
                settings = (float(lr), float(beta), bool(center), bool(normalize), rows)
                if threads > 1:
                    matrices(plan.m_at, plan.m_shapes, plan.like, _COUNTER, *settings, parts)
                else:
                    matrices_serial(plan.m_at, plan.m_shapes, plan.like, _COUNTER, *settings)
            if plan.vector:
                plan.e_at[:, 1] = [contiguous[k].data_ptr() for k in plan.vector]
                vectors(plan.e_at, plan.e_sizes, plan.like, _COUNTER, float(lr), float(beta))
        for param, work in plan.copies:
            param.copy_(work)


#: The dtype of Nero's step counters (torch.optim keeps them as float32 tensors).
_COUNTER = np.empty(0, dtype=np.float32)


_THREADS = threading.local()


def _set_threads() -> int:
    """As many kernel threads as torch uses for its own CPU ops (``torch.set_num_threads``); returns it. With one,
    numba's thread pool is not touched (setting its size starts it): the serial kernel runs instead. numba's
    setting is per calling thread, and so is the record of what it was last set to."""
    import numba

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if threads > 1 and getattr(_THREADS, "value", None) != threads:
        numba.set_num_threads(threads)
        _THREADS.value = threads
    return threads
