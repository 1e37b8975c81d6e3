"""The numba kernels of :mod:`nero_study.optim.fused` (see its docstring for what they compute and why).

A module of their own so that numba is imported only when a fused step first runs, and so that the kernels are
module-level functions, which numba can cache on disk (functions defined inside another function are compiled
again in every process).
"""

# ruff: noqa: ANN001, ANN202, ARG001

from __future__ import annotations

import math

import numba
import numpy as np
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def pointer_like(typingctx, address, like):
    """A pointer to elements of ``like``'s dtype at an integer ``address`` (a tensor's ``data_ptr()``)."""
    signature = types.CPointer(like.dtype)(address, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


# Tensors are passed by address (int64 arrays of data_ptr()s, one per tensor) with their shapes, so one
# compiled kernel per dtype serves any number of tensors; ``like`` is an empty array of the weights' dtype
# and ``counter`` one of the step counters' (float32).


@numba.njit(cache=True, nogil=True)
def step_counters(at, counter, beta):
    """Add 1 to every tensor's step counter (at[t, 4]); returns each tensor's ``1 - beta^t``."""
    corrections = np.empty(len(at))
    for t in range(len(at)):
        step = numba.carray(pointer_like(at[t, 4], counter), 1)
        step[0] += 1
        corrections[t] = 1.0 - beta ** np.float64(step[0])
    return corrections


@numba.njit(fastmath={"reassoc", "contract"}, cache=True, nogil=True)
def neuron(at, shapes, like, corrections, lr, beta, center, normalize, t, i):
    """Row ``i`` of tensor ``t``: v, the update, then centre and normalise (see ``nero_study.optim.fused``)."""
    cast = like.dtype.type
    fan_in = shapes[t, 1]
    offset = i * fan_in * like.itemsize
    w = numba.carray(pointer_like(at[t, 0] + offset, like), fan_in)
    g = numba.carray(pointer_like(at[t, 1] + offset, like), fan_in)
    v = numba.carray(pointer_like(at[t, 2], like), shapes[t, 0])
    scale = np.float64(numba.carray(pointer_like(at[t, 3], like), 1)[0])
    squares = 0.0
    for j in range(fan_in):
        squares += np.float64(g[j]) * np.float64(g[j])
    v[i] = beta * v[i] + (1.0 - beta) * squares
    v_hat = np.float64(v[i]) / corrections[t]
    total = 0.0
    squares = 0.0
    if v_hat > 0.0 and math.isfinite(v_hat):
        step = cast(-lr * scale / math.sqrt(v_hat))
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


# at[t] = addresses of tensor t's weights (rows, fan_in), gradient (same), v (rows,), scale and step (one
# element each); rows[r] = (tensor, row) of the r-th row of all tensors; parts[k]:parts[k + 1] are thread k's.


@numba.njit(parallel=True, cache=True, nogil=True)
def matrices(at, shapes, like, counter, lr, beta, center, normalize, rows, parts):
    """Every row of every weight matrix, the threads taking ``parts`` of the rows."""
    corrections = step_counters(at, counter, beta)
    for part in numba.prange(len(parts) - 1):
        for r in range(parts[part], parts[part + 1]):
            neuron(at, shapes, like, corrections, lr, beta, center, normalize, rows[r, 0], rows[r, 1])


@numba.njit(cache=True, nogil=True)
def matrices_serial(at, shapes, like, counter, lr, beta, center, normalize, rows):
    """As ``matrices`` on the calling thread alone: no thread pool is woken (a process given one thread, e.g.
    one of several sweep slots on a machine, would otherwise have its pool's threads compete for the cores)."""
    corrections = step_counters(at, counter, beta)
    for r in range(len(rows)):
        neuron(at, shapes, like, corrections, lr, beta, center, normalize, rows[r, 0], rows[r, 1])


@numba.njit(fastmath={"contract"}, cache=True, nogil=True)
def vectors(at, sizes, like, counter, lr, beta):
    # at[t] as for matrices; v has the weights' shape; sizes[t] = its number of elements.
    cast = like.dtype.type
    for t in range(len(at)):
        n = sizes[t]
        step = numba.carray(pointer_like(at[t, 4], counter), 1)
        step[0] += 1
        correction = 1.0 - beta ** np.float64(step[0])
        w = numba.carray(pointer_like(at[t, 0], like), n)
        g = numba.carray(pointer_like(at[t, 1], like), n)
        v = numba.carray(pointer_like(at[t, 2], like), n)
        scale = np.float64(numba.carray(pointer_like(at[t, 3], like), 1)[0])
        for j in range(n):
            v[j] = beta * v[j] + (1.0 - beta) * (np.float64(g[j]) * np.float64(g[j]))
            v_hat = np.float64(v[j]) / correction
            if v_hat > 0.0 and math.isfinite(v_hat):
                w[j] = w[j] - cast(lr * scale * (g[j] / math.sqrt(v_hat)))
