"""Batched-lr execution: K trials of one task trained as one stacked model.

A task that declares ``batchable = True`` trains through a :class:`~nero_study.tasks.common.SupervisedSetup`
whose model has no batch-norm statistics or dropout. K members that differ in learning rate (and seed: each
member keeps its own initialisation and data order) are stacked with ``torch.func.stack_module_state``, run with
``vmap`` + ``functional_call``, and updated by the batched form of their optimiser (``nero_study.optim.batched``),
which keeps every per-tensor, per-neuron or per-element quantity per member, with the settings a trial run
alone gets (``tasks.base.optimizer_settings``: the preset, the task's own paper settings, the spec's). Each member
checks its own loss through its own :class:`~nero_study.tasks.base.TrialContext`, with the same divergence rule
as a trial run alone: a diverged member is frozen and reported ``diverged`` while the others go on. In float64
the members equal the same trials run one by one to rounding (tests/study/test_batched.py).

Tasks that cannot be batched (batch norm, GANs, RL, language models with dropout) run packed instead;
:func:`batched_support` says why, from the task's declaration and the optimiser's settings alone (no data is
loaded to decide).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from nero_study.data.batches import minibatch_indices
from nero_study.optim.batched import batched_optimizer_for
from nero_study.study.protocol import Emit, TrialEvaluated, TrialFinished, TrialStarted
from nero_study.tasks.base import DEFAULT_NETWORK, Diverged, EvalPoint, TrialContext, TrialSpec, optimizer_settings
from nero_study.tasks.common import SupervisedSetup
from nero_study.tasks.registry import get_task
from nero_study.tasks.runner import build_result, prepare_trial, seed_everything
from nero_study.vocabulary import ExecutionUsed, TrialOutcome


def _group_key(spec: TrialSpec) -> tuple[Any, ...]:
    """Members of one batch share everything but lr and seed."""
    return (
        spec.task,
        spec.budget,
        spec.optimizer,
        spec.preset,
        repr(sorted(spec.hyperparameters.items())),
        repr(sorted(spec.task_options.items())),
        spec.device,
    )


def batched_support(spec: TrialSpec) -> str | None:
    """None when ``spec`` can run as a stacked member; otherwise the reason it runs alone (packed)."""
    task = get_task(spec.task)
    if not task.batchable:
        return (
            f"task {spec.task!r} does not declare batched support (stacked members need a supervised setup "
            "without batch statistics or dropout)"
        )
    settings = optimizer_settings(task, spec.optimizer, spec.preset, spec.hyperparameters)[DEFAULT_NETWORK]
    if batched_optimizer_for(spec.optimizer, settings) is None:
        return f"optimizer {spec.optimizer!r} with settings {settings} has no batched form"
    return None


def batched_groups(specs: Sequence[TrialSpec]) -> tuple[list[list[int]], list[int]]:
    """Which members of ``specs`` run stacked together (groups of two or more) and which run alone.

    An invalid spec runs alone, where it fails with its own message.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    alone: list[int] = []
    for member, spec in enumerate(specs):
        try:
            reason = batched_support(spec)
        except ValueError:
            reason = "invalid spec"
        if reason is None:
            groups.setdefault(_group_key(spec), []).append(member)
        else:
            alone.append(member)
    stacked = [members for members in groups.values() if len(members) > 1]
    alone.extend(member for members in groups.values() if len(members) == 1 for member in members)
    return stacked, sorted(alone)


def supports_batched(specs: Sequence[TrialSpec]) -> bool:
    """Whether at least two members of ``specs`` can share one stacked run."""
    return bool(batched_groups(specs)[0])


def auto_execution(specs_by_label: Mapping[str, Sequence[TrialSpec]]) -> tuple[ExecutionUsed, str]:
    """What ``execution: auto`` runs for one task's trials (grouped by optimiser variant), and why in words.

    The rule, stated: batched where two or more of the task's trials can share a stacked run (one stacked run
    per slot), else packed. Measured through a warm service on CPU (``benchmarks/sweep_throughput.py``),
    stacking was 0.89-1.18x as fast as separate trials for digits-mlp and digits-vgg: it saves per-step
    Python and launch costs, which on warm CPU runners are a small part of a step, so the rule picks it where
    it can run and does not promise more.
    """
    specs = [spec for group in specs_by_label.values() for spec in group]
    if supports_batched(specs):
        stacked = [label for label, group in specs_by_label.items() if supports_batched(group)]
        return "batched", f"the trials of {', '.join(stacked)} share stacked runs (one per slot)"
    reasons: dict[str, None] = {}
    for group in specs_by_label.values():
        try:
            reason = batched_support(group[0]) if group else None
        except ValueError as exc:
            reason = str(exc)
        reasons[reason or "fewer than two trials to stack"] = None
    return "packed", "; ".join(reasons)


class _Member:
    def __init__(self, member: int, spec: TrialSpec, ctx: TrialContext) -> None:
        self.member = member
        self.spec = spec
        self.ctx = ctx
        self.status: TrialOutcome = "succeeded"
        self.error: str | None = None
        self.last_loss = math.nan


def run_batched_group(members: Sequence[tuple[int, TrialSpec]], emit: Emit) -> None:
    """Train members (bundle index, spec) that share task, budget and optimiser settings as one stacked model."""
    start = time.perf_counter()
    first = members[0][1]
    try:
        task, config, device = prepare_trial(first)
        for _, spec in members[1:]:
            prepare_trial(spec)
    except Exception as exc:  # noqa: BLE001 - report every member failed, as the packed path would
        for member, spec in members:
            emit(TrialStarted(member))
            emit(TrialFinished.failed(member, spec, exc, time.perf_counter() - start))
        return
    setup: SupervisedSetup = task.supervised_setup(config)
    settings = optimizer_settings(task, first.optimizer, first.preset, first.hyperparameters)[DEFAULT_NETWORK]
    optimizer_cls = batched_optimizer_for(first.optimizer, settings)
    if optimizer_cls is None:
        raise ValueError(batched_support(first))  # run_bundle only stacks members batched_support accepts

    runs: list[_Member] = []
    models = []
    for member, spec in members:
        emit(TrialStarted(member))

        def reporter(point: EvalPoint, member: int = member) -> None:
            emit(TrialEvaluated.of(member, point))

        seed_everything(spec.seed)
        ctx = TrialContext(spec, task, device, reporter)
        runs.append(_Member(member, spec, ctx))
        models.append(setup.make_model().to(device))

    params, buffers = stack_module_state(models)
    names = list(params)
    tensors = [params[name] for name in names]
    base = copy.deepcopy(models[0]).to("meta")
    del models

    def forward(member_params: dict[str, torch.Tensor], member_buffers: dict[str, torch.Tensor], x: torch.Tensor):
        return functional_call(base, (member_params, member_buffers), (x,))

    train_forward = vmap(forward, in_dims=(0, 0, 0))
    shared_forward = vmap(forward, in_dims=(0, 0, None))
    lrs = torch.tensor([spec.lr for _, spec in members], device=device)
    optimizer = optimizer_cls(tensors, lrs, settings)
    active = torch.ones(len(members), dtype=torch.bool, device=device)
    train_x, train_y = setup.train_x.to(device), setup.train_y.to(device)
    test_x, test_y = setup.test_x.to(device), setup.test_y.to(device)
    per_epoch = setup.steps_per_epoch
    total_steps = setup.epochs * per_epoch
    if setup.max_steps is not None:
        total_steps = min(total_steps, setup.max_steps)
    eval_every = max(1, per_epoch // max(1, setup.evals_per_epoch))

    @torch.no_grad()
    def evaluate(step: int) -> None:
        stacked = dict(zip(names, tensors, strict=True))
        wrong = torch.zeros(len(members), device=device)
        for offset in range(0, len(test_x), 1024):
            logits = shared_forward(stacked, buffers, test_x[offset : offset + 1024])
            wrong += (logits.argmax(dim=2) != test_y[offset : offset + 1024]).sum(dim=1)
        errors = (wrong / max(1, len(test_x))).tolist()
        for index, run in enumerate(runs):
            if not bool(active[index]):
                continue
            try:
                run.ctx.evaluate(step=step, epoch=step / per_epoch, train_loss=run.last_loss, metric=errors[index])
            except Diverged as exc:
                _freeze(index, run, exc)

    def _freeze(index: int, run: _Member, exc: Diverged) -> None:
        run.status, run.error = "diverged", str(exc)
        active[index] = False

    evaluate(0)
    step = 0
    for _epoch in range(setup.epochs):
        iterators = [minibatch_indices(len(train_x), setup.batch_size, run.ctx.generator) for run in runs]
        for batch_indices in zip(*iterators, strict=True):
            if step >= total_steps or not bool(active.any()):
                break
            index = torch.stack(batch_indices).to(device)
            x, y = train_x[index], train_y[index]
            stacked = dict(zip(names, tensors, strict=True))
            logits = train_forward(stacked, buffers, x)
            losses = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
            ).reshape(len(runs), -1).mean(dim=1)
            total = torch.where(active, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total, tensors)
            optimizer.step(grads, active, setup.schedule(step / per_epoch))
            step += 1
            values = losses.detach().tolist()
            for i, run in enumerate(runs):
                if not bool(active[i]):
                    continue
                try:
                    run.last_loss = run.ctx.check_loss(values[i], step=step)
                except Diverged as exc:
                    _freeze(i, run, exc)
            if step % eval_every == 0 and step < total_steps:
                evaluate(step)
        if step >= total_steps or not bool(active.any()):
            break
    evaluate(step)
    wall_s = (time.perf_counter() - start) / len(runs)
    for run in runs:
        result = build_result(run.ctx, status=run.status, error=run.error, wall_s=wall_s)
        emit(TrialFinished.of(run.member, result))
