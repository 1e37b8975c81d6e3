"""The task interface and the one trial entry point, :func:`run_trial`.

A *task* names a model, its data, a loss, a metric (and whether lower is better), the metric at
initialisation or chance, and three budgets (``smoke`` for tests, ``proxy`` for a CPU minute, ``paper``
for the paper's settings). A *trial* is one training run of a task with one optimiser at one learning
rate and seed. Every caller — the CLI, the sweep workers, the tests — runs trials through
:func:`nero_study.tasks.runner.run_trial`.

Task authors implement :meth:`Task.train`, which trains and calls ``ctx.evaluate(...)`` at regular
evaluations and ``ctx.check_loss(...)`` on each training loss; divergence raises :class:`Diverged`,
which the runner turns into the normal status ``diverged``.

Optimiser settings: a trial's optimiser is built with the settings :func:`optimizer_settings` resolves,
in this order: the registry's preset (``nero_study.optim.registry``), then, under the ``paper`` preset, the
task's own overrides (``Task.paper_settings`` for all its networks, ``Task.network_paper_settings`` per
network: the settings the paper's code gave that baseline on that task), then the spec's explicit
``hyperparameters``. The trial runner, the CLI and API listings and the store all use that one function.
A task with several networks (a GAN's generator and discriminator) names them in ``Task.networks`` and
builds one optimiser per network with ``ctx.build_optimizer(params, network=...)``; the trial's lr and
explicit settings apply to every network, as in the paper.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import torch

from nero_study.errors import TaskConfigError  # raised by Task.config: part of the task interface
from nero_study.vocabulary import PRESETS, TrialOutcome

#: Training-loss checks whose mean the divergence rule compares with a task's thresholds (see ``check_loss``).
DIVERGENCE_WINDOW = 20
DEFAULT_NETWORK = "model"
"""The one network of a task that trains a single model."""
SettingsByNetwork = dict[str, dict[str, Any]]
"""Optimiser settings per network: ``{"model": {"betas": (0.9, 0.999), "eps": 1e-08}}``."""


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
    settings: SettingsByNetwork = field(default_factory=dict)

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
            "settings": settings_as_json(self.settings),
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
        self.final_metric: float | None = None
        self.final_initial_metric: float | None = None
        self._divergence_factor = (
            task.divergence_factor if divergence_factor is None else divergence_factor
        )

    @property
    def settings(self) -> SettingsByNetwork:
        """The optimiser settings of this trial per network (see :func:`optimizer_settings`)."""
        return optimizer_settings(self.task, self.spec.optimizer, self.spec.preset, self.spec.hyperparameters)

    def build_optimizer(self, params: Iterable[Any], network: str | None = None) -> torch.optim.Optimizer:
        """The trial's optimiser at the trial's lr with the settings :func:`optimizer_settings` resolves.

        ``network`` names which of the task's ``networks`` ``params`` belong to; it may be left out when the
        task trains one network.
        """
        from nero_study.optim.registry import get_optimizer

        networks = self.task.networks
        if network is None:
            if len(networks) != 1:
                raise ValueError(
                    f"task {self.task.name!r} trains several networks; name one of: {', '.join(networks)}"
                )
            network = networks[0]
        if network not in networks:
            raise ValueError(f"Unknown network {network!r} of task {self.task.name!r}; valid: {', '.join(networks)}")
        info = get_optimizer(self.spec.optimizer)
        return info.factory(params, lr=self.spec.lr, **self.settings[network])

    def report_final(self, metric: float, *, initial: float | None = None) -> None:
        """Record the trial's result when it is not the last point of the curve (e.g. the test perplexity of
        the best-validation checkpoint); ``initial`` is the same measure at initialisation, if known.

        :func:`build_result` then reports it as the trial's ``metric`` and ``best_metric``; the curve keeps
        what the task evaluated along the way (``Task.curve_metric_name``).
        """
        self.final_metric = float(metric)
        self.final_initial_metric = None if initial is None else float(initial)
        if not math.isfinite(self.final_metric):
            raise Diverged(f"the final {self.task.metric_name} became {self.final_metric}")

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
    # An error rate (a fraction of test examples misclassified) on a test set of this many examples: the
    # analysis shows its binomial standard error sqrt(p (1 - p) / n) (None: size unknown or not fixed).
    metric_is_error_rate: ClassVar[bool] = False
    test_set_size: ClassVar[int | None] = None
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
    # What the curve's metric is when the trial's result is another measure (see TrialContext.report_final).
    curve_metric_name: ClassVar[str | None] = None
    # The networks the task trains, each with its own optimiser (a GAN: generator and discriminator).
    networks: ClassVar[tuple[str, ...]] = (DEFAULT_NETWORK,)
    # Per optimiser, the settings the paper's code gave it on this task where they differ from the registry's
    # ``paper`` preset, for all networks; then per network and optimiser. Applied under the ``paper`` preset
    # only, below a spec's explicit settings. ``paper_settings_source`` names the reference file and line.
    paper_settings: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    network_paper_settings: ClassVar[Mapping[str, Mapping[str, Mapping[str, Any]]]] = {}
    paper_settings_source: ClassVar[str] = ""
    # What a reader of the task's results must know (a known limit of the task), shown in the listings.
    caveat: ClassVar[str] = ""

    def paper_overrides(self, optimizer: str, network: str | None = None) -> dict[str, Any]:
        """The task's own settings for ``optimizer`` on ``network`` on top of the registry's paper preset."""
        network = network or self.networks[0]
        return {
            **dict(self.paper_settings.get(optimizer, {})),
            **dict(self.network_paper_settings.get(network, {}).get(optimizer, {})),
        }

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
        """What the listings show: metric, budgets, caveat and, per optimiser, the settings trials use."""
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "metric_name": self.metric_name,
            "curve_metric_name": self.curve_metric_name or self.metric_name,
            "lower_is_better": self.lower_is_better,
            "chance_metric": self.chance_metric,
            "budgets": list(self.budgets),
            "default_device": self.default_device,
            "caveat": self.caveat,
            "networks": list(self.networks),
            "paper_overrides": {
                network: overrides
                for network in self.networks
                if (overrides := _overrides_as_json(self, network))
            },
            "paper_settings_source": self.paper_settings_source,
            "optimizer_settings": optimizer_settings_table(self),
        }


def _overrides_as_json(task: Task, network: str) -> dict[str, dict[str, Any]]:
    from nero_study.optim.registry import list_optimizers

    return {
        info.name: settings_as_json({network: overrides})[network]
        for info in list_optimizers()
        if (overrides := task.paper_overrides(info.name, network))
    }


def settings_as_json(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Settings per network as JSON values (tuples become lists)."""
    return {
        network: {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}
        for network, values in settings.items()
    }


def optimizer_settings(
    task: Task,
    optimizer: str,
    preset: str = "paper",
    hyperparameters: Mapping[str, Any] | None = None,
) -> SettingsByNetwork:
    """The settings a trial of ``task`` builds ``optimizer`` with, per network of the task (the lr aside).

    In order: the registry's ``preset``; under the ``paper`` preset, the task's own overrides
    (:meth:`Task.paper_overrides`); the spec's explicit ``hyperparameters``. Every network's result is
    checked by the registry (unknown names or bad values raise ``ValueError`` naming them). The trial runner,
    the listings, the API and the store all resolve settings here.
    """
    explicit = dict(hyperparameters or {})
    try:
        key = json.dumps(explicit, sort_keys=True)
    except TypeError:  # values JSON cannot hold (never from a spec): resolve without the cache
        resolved = _resolve(task, optimizer, preset, explicit)
    else:
        resolved = _resolved_settings(task, optimizer, preset, key)
    return {network: dict(values) for network, values in resolved.items()}


@lru_cache(maxsize=4096)
def _resolved_settings(task: Task, optimizer: str, preset: str, hyperparameters_json: str) -> SettingsByNetwork:
    """:func:`_resolve`, cached: listings and the store resolve the same few combinations many times."""
    return _resolve(task, optimizer, preset, json.loads(hyperparameters_json))


def _resolve(task: Task, optimizer: str, preset: str, explicit: Mapping[str, Any]) -> SettingsByNetwork:
    from nero_study.optim.registry import resolve_settings

    resolved: SettingsByNetwork = {}
    for network in task.networks:
        overrides = task.paper_overrides(optimizer, network) if preset == "paper" else {}
        resolved[network] = resolve_settings(optimizer, preset, {**overrides, **explicit})
    return resolved


def optimizer_settings_table(task: Task) -> dict[str, dict[str, SettingsByNetwork]]:
    """Per preset and registered optimiser, the settings a trial of ``task`` with no explicit settings uses
    (JSON values): what ``nero-study tasks --json`` and ``/api/tasks`` show."""
    from nero_study.optim.registry import list_optimizers

    return {
        preset: {
            info.name: settings_as_json(optimizer_settings(task, info.name, preset))
            for info in list_optimizers()
            if preset in info.presets
        }
        for preset in PRESETS
    }


def cpu_threads() -> int:
    """CPUs this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))
