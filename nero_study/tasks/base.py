"""The task interface and the one trial entry point, :func:`run_trial`.

A *task* names a model, its data, a loss, a metric (and whether lower is better), the metric at
initialisation or chance, and three budgets (``smoke`` for tests, ``proxy`` for a CPU minute, ``paper``
for the paper's settings). A *trial* is one training run of a task with one optimiser at one learning
rate and seed. Every caller — the CLI, the sweep workers, the tests — runs trials through
:func:`nero_study.tasks.runner.run_trial`.

Task authors implement :meth:`Task.train`, which trains and calls ``ctx.evaluate(...)`` at regular
evaluations and ``ctx.check_loss(...)`` on each training loss; divergence raises :class:`Diverged`,
which the runner turns into the normal status ``diverged``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from nero_study.errors import TaskConfigError  # raised by Task.config: part of the task interface
from nero_study.vocabulary import TrialOutcome

#: Training-loss checks whose mean the divergence rule compares with a task's thresholds (see ``check_loss``).
DIVERGENCE_WINDOW = 20


class Diverged(Exception):
    """Raised inside a task's training loop when the loss blew up; a normal sweep outcome."""


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one training run.

    ``hyperparameters`` are optimiser settings on top of the preset (e.g. ``{"beta": 0.99}``);
    ``task_options`` override fields of the task's budget config (e.g. ``{"bn_gain_reg": 0.01}``).
    ``label`` names an optimiser variant in tables (defaults to the optimiser name).
    """

    task: str
    optimizer: str
    lr: float
    seed: int = 0
    budget: str = "proxy"
    preset: str = "paper"
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    device: str | None = None

    @property
    def optimizer_label(self) -> str:
        return self.label or self.optimizer

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation on a learning curve: ``step`` counts optimiser steps, ``epoch`` may be fractional."""

    step: int
    epoch: float
    train_loss: float
    metric: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


Reporter = Callable[[EvalPoint], None]


@dataclass
class TrialResult:
    """The outcome of one trial. ``metric`` is the final evaluation (NaN if none), oriented as the task's."""

    spec: TrialSpec
    status: TrialOutcome
    metric: float
    best_metric: float
    initial_metric: float
    metric_name: str
    lower_is_better: bool
    curve: list[EvalPoint]
    wall_s: float
    device: str
    steps: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.spec.task,
            "optimizer": self.spec.optimizer,
            "label": self.spec.optimizer_label,
            "lr": self.spec.lr,
            "seed": self.spec.seed,
            "budget": self.spec.budget,
            "preset": self.spec.preset,
            "hyperparameters": self.spec.hyperparameters,
            "task_options": self.spec.task_options,
            "status": self.status,
            "metric": self.metric,
            "best_metric": self.best_metric,
            "initial_metric": self.initial_metric,
            "metric_name": self.metric_name,
            "lower_is_better": self.lower_is_better,
            "curve": [point.to_dict() for point in self.curve],
            "wall_s": self.wall_s,
            "device": self.device,
            "steps": self.steps,
            "error": self.error,
        }


class TrialContext:
    """What a task's training loop talks to: device, seeded generator, evaluation and divergence checks."""

    def __init__(
        self,
        spec: TrialSpec,
        task: Task,
        device: torch.device,
        reporter: Reporter | None = None,
        divergence_factor: float | None = None,
    ) -> None:
        self.spec = spec
        self.task = task
        self.device = device
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.curve: list[EvalPoint] = []
        self.steps = 0
        self._reporter = reporter
        self._first_loss: float | None = None
        self._window: deque[float] = deque(maxlen=DIVERGENCE_WINDOW)
        self.losses_checked = 0
        self._divergence_factor = (
            task.divergence_factor if divergence_factor is None else divergence_factor
        )

    def build_optimizer(self, params: Iterable[Any]) -> torch.optim.Optimizer:
        """The trial's optimiser from the registry, with its preset and hyperparameter overrides."""
        from nero_study.optim.registry import build

        return build(
            self.spec.optimizer,
            params,
            lr=self.spec.lr,
            preset=self.spec.preset,
            **self.spec.hyperparameters,
        )

    def check_loss(self, loss: float | torch.Tensor, *, step: int | None = None) -> float:
        """Raise :class:`Diverged` when the training loss blew up; returns the loss as a float.

        The rule, the same for a trial run alone and for a member of a batched bundle (both call this with
        the same per-step loss): a NaN/inf loss ends the trial at once; otherwise the mean loss over the last
        :data:`DIVERGENCE_WINDOW` checks (fewer at the start) is compared with the task's thresholds,
        ``divergence_factor`` x the first loss and the absolute ``divergence_ceiling``. A window, not a single
        step, so that one spike that the run recovers from (a chaotic trajectory near the stable edge, where
        float rounding decides where spikes fall) does not decide the status, while a loss that stays up does.
        ``step`` (optimiser steps taken so far) keeps ``steps`` right for a trial that stops early.
        """
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        self.losses_checked += 1
        if step is not None:
            self.steps = max(self.steps, int(step))
        if not math.isfinite(value):
            raise Diverged(f"training loss became {value} at training step {self.losses_checked}")
        if self._first_loss is None:
            self._first_loss = value
        self._window.append(value)
        mean = sum(self._window) / len(self._window)
        where = f"over training steps {self.losses_checked - len(self._window) + 1}..{self.losses_checked}"
        ceiling = self.task.divergence_ceiling
        if ceiling is not None and mean > ceiling:
            raise Diverged(f"mean training loss {mean:.4g} {where} exceeds the task's ceiling {ceiling:g}")
        if self._divergence_factor is not None:
            limit = self._divergence_factor * max(abs(self._first_loss), 1e-3)
            if mean > limit:
                raise Diverged(
                    f"mean training loss {mean:.4g} {where} exceeds "
                    f"{self._divergence_factor}x the initial loss {self._first_loss:.4g}"
                )
        return value

    def evaluate(self, *, step: int, epoch: float, train_loss: float, metric: float) -> EvalPoint:
        """Record one point of the learning curve and stream it to the reporter."""
        point = EvalPoint(step=int(step), epoch=float(epoch), train_loss=float(train_loss), metric=float(metric))
        self.curve.append(point)
        self.steps = int(step)
        if self._reporter is not None:
            self._reporter(point)
        if not math.isfinite(point.metric):
            raise Diverged(f"metric became {point.metric} at step {step}")
        return point


class Task(ABC):
    """A benchmark task. Subclasses set the class attributes and implement :meth:`train`.

    ``budgets`` maps ``smoke``/``proxy``/``paper`` to a frozen config dataclass instance; a trial's
    ``task_options`` replace fields of it (unknown fields fail with the list of valid ones).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    metric_name: ClassVar[str]
    lower_is_better: ClassVar[bool]
    chance_metric: ClassVar[float]
    kind: ClassVar[str] = "proxy"  # "proxy" (CPU) or "paper" (paper settings, GPU scale)
    default_device: ClassVar[str] = "cpu"  # "cpu", "cuda" or "auto" (cuda when available)
    # diverged (``TrialContext.check_loss``): the windowed mean loss above this many times the first loss,
    # or above this absolute value; a NaN/inf loss always.
    divergence_factor: ClassVar[float | None] = 5.0
    divergence_ceiling: ClassVar[float | None] = None
    # True: ``supervised_setup(config)`` gives a SupervisedSetup whose model can be stacked (no batch statistics,
    # no dropout), so K trials differing in lr and seed can train as one batched run (nero_study.study.batched).
    batchable: ClassVar[bool] = False
    budgets: ClassVar[dict[str, Any]]

    def config(self, budget: str, options: dict[str, Any] | None = None) -> Any:
        """The budget's config with ``options`` applied, validated."""
        if budget not in self.budgets:
            raise TaskConfigError(
                f"Invalid budget {budget!r} for task {self.name!r}; valid: {', '.join(self.budgets)}"
            )
        config = self.budgets[budget]
        if options:
            valid = {f.name for f in dataclasses.fields(config)}
            unknown = sorted(set(options) - valid)
            if unknown:
                raise TaskConfigError(
                    f"Invalid task option(s) {', '.join(unknown)} for task {self.name!r}; "
                    f"valid: {', '.join(sorted(valid))}"
                )
            config = dataclasses.replace(config, **options)
        return config

    def check_data(self, config: Any) -> None:
        """Fail at once, with the expected file and place, when the task's data is missing."""

    @abstractmethod
    def train(self, config: Any, ctx: TrialContext) -> None:
        """Train under ``config``, calling ``ctx.check_loss`` per step and ``ctx.evaluate`` regularly.

        The first evaluation should be at step 0 (the metric at initialisation).
        """

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "metric_name": self.metric_name,
            "lower_is_better": self.lower_is_better,
            "chance_metric": self.chance_metric,
            "budgets": list(self.budgets),
            "default_device": self.default_device,
        }


def cpu_threads() -> int:
    """CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))
