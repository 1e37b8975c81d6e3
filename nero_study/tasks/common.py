"""Pieces shared by the tasks' training loops: seeded mini-batches, lr schedules, a supervised loop.

Every loop evaluates at step 0 (the metric at initialisation), at regular steps and at the end, and
checks each training loss for divergence through the :class:`TrialContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from nero_study.data.batches import minibatch_indices
from nero_study.tasks.base import TrialContext

Batch = tuple[torch.Tensor, torch.Tensor]


def tensor_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Callable[[int], Iterable[Batch]]:
    """``epoch -> batches`` over in-memory tensors, reshuffled every epoch from ``generator``."""

    def batches(epoch: int) -> Iterator[Batch]:
        for index in minibatch_indices(len(x), batch_size, generator):
            yield x[index], y[index]

    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size)


@dataclass(frozen=True)
class StepSchedule:
    """Linear warm-up over ``warmup_epochs``, then multiply by ``gamma`` at each milestone epoch."""

    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __call__(self, epoch: float) -> float:
        factor = 1.0
        if self.warmup_epochs > 0 and epoch < self.warmup_epochs:
            factor = (epoch + 1e-12) / self.warmup_epochs
        for milestone in self.milestones:
            if epoch >= milestone:
                factor *= self.gamma
        return factor


@dataclass(frozen=True)
class ExponentialSchedule:
    """Multiply the lr by ``gamma`` once per epoch (the paper's 100-layer MLP used 0.9)."""

    gamma: float

    def __call__(self, epoch: float) -> float:
        return self.gamma ** math.floor(epoch)


@dataclass(frozen=True)
class CosineSchedule:
    """Cosine decay from 1 to 0 over ``epochs`` (ImageNet)."""

    epochs: float

    def __call__(self, epoch: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))


def constant_schedule(epoch: float) -> float:
    return 1.0


def set_lr_factor(optimizer: torch.optim.Optimizer, base_lrs: list[float], factor: float) -> None:
    for group, base_lr in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = base_lr * factor


@torch.no_grad()
def classification_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 error in [0, 1] of ``model`` on in-memory ``(x, y)``."""
    was_training = model.training
    model.eval()
    wrong = 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        wrong += int((logits.argmax(dim=1) != y[start : start + batch_size]).sum())
    model.train(was_training)
    return wrong / max(1, len(x))


def train_supervised(
    ctx: TrialContext,
    *,
    model: nn.Module,
    batches: Callable[[int], Iterable[Batch]],
    epochs: int,
    steps_per_epoch: int,
    evaluate: Callable[[], float],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    schedule: Callable[[float], float] = constant_schedule,
    evals_per_epoch: int = 1,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    grad_clip: float | None = None,
    max_steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """A plain supervised loop: per-step lr from ``schedule(epoch)``, evaluations on a fixed cadence.

    ``evaluate()`` returns the task's metric; ``extra_loss(model)`` adds a regulariser to the loss.
    ``max_steps`` cuts the run short (smoke budgets).
    """
    device = ctx.device
    model.to(device)
    optimizer = optimizer or ctx.build_optimizer(model.parameters())
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    total_steps = epochs * steps_per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    eval_every = max(1, steps_per_epoch // max(1, evals_per_epoch))

    step = 0
    last_loss = math.nan
    ctx.evaluate(step=0, epoch=0.0, train_loss=math.nan, metric=evaluate())
    model.train()
    for epoch in range(epochs):
        for x, y in batches(epoch):
            if step >= total_steps:
                break
            set_lr_factor(optimizer, base_lrs, schedule(step / steps_per_epoch))
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            output = model(x)
            loss = loss_fn(output, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            step += 1
            last_loss = ctx.check_loss(loss, step=step)
            if step % eval_every == 0 and step < total_steps:
                ctx.evaluate(step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate())
        if step >= total_steps:
            break
    ctx.evaluate(step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate())


def batchnorm_gain_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """``strength * sum over batch-norm gains of (gain - 1)^2`` (the paper's ImageNet regulariser)."""
    terms = [
        ((module.weight - 1.0) ** 2).sum()
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None
    ]
    if not terms:
        return torch.zeros((), device=next(model.parameters()).device)
    return strength * torch.stack(terms).sum()


@dataclass(frozen=True)
class SupervisedSetup:
    """A supervised classification run described as data, so that it can be run one model at a time
    (:meth:`run`, through :func:`train_supervised`) or as K stacked members at once (batched-lr execution,
    ``nero_study.study.batched``), with the same model initialisation, data order and evaluation cadence.

    ``make_model`` is called right after the trial's seed is set. A task whose setup's model has no
    batch-norm statistics or dropout (so stacked members behave exactly like separate models) declares
    ``batchable = True``.
    """

    make_model: Callable[[], nn.Module]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    batch_size: int
    epochs: int
    evals_per_epoch: int = 1
    max_steps: int | None = None
    schedule: Callable[[float], float] = constant_schedule

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train_x), self.batch_size)

    def run(self, ctx: TrialContext) -> None:
        """Train one model of this setup under ``ctx`` (the sequential path)."""
        model = self.make_model()
        test_x, test_y = self.test_x.to(ctx.device), self.test_y.to(ctx.device)
        train_supervised(
            ctx,
            model=model,
            batches=tensor_batches(self.train_x, self.train_y, self.batch_size, ctx.generator),
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            evaluate=lambda: classification_error(model, test_x, test_y),
            schedule=self.schedule,
            evals_per_epoch=self.evals_per_epoch,
            max_steps=self.max_steps,
        )
