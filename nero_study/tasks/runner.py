"""The one trial entry point, :func:`run_trial`, and the steps it takes: check the spec, seed, train, result.

Used by the CLI's ``trial`` command, the sweep engine's Ray workers (through ``nero_study.study.execute``) and
the tests. Batched execution (``nero_study.study.batched``) uses the same steps for each stacked member.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch

from nero_study.errors import TaskConfigError
from nero_study.tasks.base import Diverged, Reporter, Task, TrialContext, TrialResult, TrialSpec, optimizer_settings
from nero_study.tasks.registry import get_task
from nero_study.vocabulary import TrialOutcome


def resolve_device(requested: str | None, task: Task) -> torch.device:
    """The torch device of a trial: the spec's, else the task's default (``auto``: CUDA when available)."""
    choice = requested or task.default_device
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise TaskConfigError(f"Device {choice!r} requested but CUDA is not available; use 'cpu'")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that the same spec gives the same trial on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def prepare_trial(spec: TrialSpec) -> tuple[Task, Any, torch.device]:
    """Check a spec before any training: task, lr, optimiser settings, task options, data, device.

    Raises ``ValueError`` subclasses whose messages name what is wrong and what is allowed.
    """
    task = get_task(spec.task)
    if not (isinstance(spec.lr, int | float) and math.isfinite(spec.lr) and spec.lr > 0):
        raise ValueError(f"Invalid lr: {spec.lr}; the learning rate must be a positive finite number")
    optimizer_settings(task, spec.optimizer, spec.preset, spec.hyperparameters)
    config = task.config(spec.budget, spec.task_options)
    task.check_data(config)
    return task, config, resolve_device(spec.device, task)


def run_trial(spec: TrialSpec, reporter: Reporter | None = None) -> TrialResult:
    """Run one trial to completion; never raises for a bad learning rate or a broken run.

    Returns status ``succeeded``, ``diverged`` (loss blew up: a normal outcome of a sweep) or ``failed``
    (a real error, with its message). Invalid specs (unknown task, optimiser, option, missing data)
    raise ``ValueError`` subclasses before any training.
    """
    task, config, device = prepare_trial(spec)
    seed_everything(spec.seed)
    ctx = TrialContext(spec, task, device, reporter)
    status: TrialOutcome = "succeeded"
    error: str | None = None
    start = time.perf_counter()
    try:
        task.train(config, ctx)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except Exception as exc:  # noqa: BLE001 - a trial's crash is reported, not propagated
        status, error = "failed", f"{type(exc).__name__}: {exc}"
    wall_s = time.perf_counter() - start
    return build_result(ctx, status=status, error=error, wall_s=wall_s)


def build_result(ctx: TrialContext, *, status: TrialOutcome, error: str | None, wall_s: float) -> TrialResult:
    """The :class:`TrialResult` of a finished training loop: final, best and initial metric from its curve,
    or the result the task reported with ``ctx.report_final`` (e.g. a best-validation checkpoint's test score)."""
    task = ctx.task
    metrics = [p.metric for p in ctx.curve if math.isfinite(p.metric)]
    final = ctx.curve[-1].metric if ctx.curve else math.nan
    if metrics:
        best = min(metrics) if task.lower_is_better else max(metrics)
    else:
        best = math.nan
    initial = ctx.curve[0].metric if ctx.curve and ctx.curve[0].step == 0 else task.chance_metric
    if ctx.final_metric is not None and status == "succeeded":
        final = best = ctx.final_metric
        if ctx.final_initial_metric is not None:
            initial = ctx.final_initial_metric
    return TrialResult(
        spec=ctx.spec,
        status=status,
        metric=final,
        best_metric=best,
        initial_metric=initial,
        metric_name=task.metric_name,
        lower_is_better=task.lower_is_better,
        curve=ctx.curve,
        wall_s=wall_s,
        device=str(ctx.device),
        steps=ctx.steps,
        error=error,
        settings=ctx.settings,
    )
