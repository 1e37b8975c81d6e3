"""The sweep specification: what to run, loaded from YAML, JSON or a dict and validated before anything runs.

A :class:`SweepSpec` names tasks, optimiser variants, a learning-rate grid, seeds, a protocol, a budget and
the resources per trial. Every error names the field and, where there is a closed set, the valid values.
Each optimiser's default learning rate is always part of its grid (the out-of-the-box point), so grids are
per optimiser: use :meth:`SweepSpec.grid_for`.

Example (YAML)::

    tasks: [digits-mlp, text-lm]
    optimizers:
      - nero
      - adam
      - {name: nero, label: nero-unconstrained, settings: {constraints: false}}
    lrs: {min: 1.0e-4, max: 1.0, points_per_decade: 1}
    seeds: [0, 1, 2]
    protocol: paper

``protocol: bracket`` takes ``lrs`` as a coarse grid and adds lrs by rounds (``nero_study.study.bracket``), at
most ``bracket_max_lrs`` per (task, optimiser), until the best lr is resolved to ``bracket_resolution`` decades.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nero_study.optim.registry import get_optimizer, resolve_settings
from nero_study.settings import DEFAULT_MAX_TRIALS_PER_SWEEP
from nero_study.tasks.registry import TASKS
from nero_study.vocabulary import Budget, ExecutionMode, Preset, Protocol, same_lr

SpecFormat = Literal["yaml", "json"]
#: Validation-context key of a spec read back from the store (see :meth:`SweepSpec.from_stored`).
_ADMITTED = "admitted"

#: Significant digits kept in log-spaced grid values (so 1e-4..1 by decades is exactly 1e-4, ..., 1).
GRID_SIGNIFICANT_DIGITS = 6
_MAX_POINTS_PER_DECADE = 1000
#: Most learning rates one grid may hold (a log grid's count is computed before any value is built).
MAX_GRID_POINTS = 10_000
#: Largest seed: the store keeps seeds in a 32-bit signed integer column (PostgreSQL ``integer``).
MAX_SEED = 2**31 - 1
#: Most seeds, optimiser variants in one spec.
MAX_SEEDS = 1000
MAX_OPTIMIZERS = 64
#: Bounds of the free-form JSON fields (an optimiser variant's ``settings``, a task's ``task_options``):
#: nesting depth (a flat mapping of numbers is depth 1) and size in bytes of their JSON.
MAX_OPTIONS_DEPTH = 4
MAX_OPTIONS_BYTES = 4096
#: Most CPUs and GPUs one trial may ask for (a worker also checks them against its cluster when it claims).
MAX_CPU_PER_TRIAL = 1024.0
MAX_GPU_PER_TRIAL = 64.0
#: Largest bundle size and concurrency a spec may ask for.
MAX_PARALLEL = 10_000
#: ``protocol: bracket``: most learning rates per (task, optimiser) (``bracket_max_lrs``), and the range of the
#: resolution it refines the best lr to (``bracket_resolution``, in decades).
DEFAULT_BRACKET_MAX_LRS = 12
MAX_BRACKET_LRS = 1000
DEFAULT_BRACKET_RESOLUTION = 0.25
MIN_BRACKET_RESOLUTION = 0.01
MAX_BRACKET_RESOLUTION = 2.0


def _check_task(name: str) -> str:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; valid: {', '.join(TASKS)}")
    return name


def _check_lr(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Invalid lr {value}; a learning rate must be a positive finite number")
    return value


def _check_free_form(value: Any, where: str) -> None:
    """Refuse free-form JSON nested deeper than :data:`MAX_OPTIONS_DEPTH` or larger than
    :data:`MAX_OPTIONS_BYTES` (walked without recursion, so any depth is measured safely)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            depth += 1
            if depth > MAX_OPTIONS_DEPTH:
                raise ValueError(
                    f"{where} is nested more than {MAX_OPTIONS_DEPTH} levels deep; valid: at most "
                    f"{MAX_OPTIONS_DEPTH} levels of mappings and lists"
                )
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    size = len(json.dumps(value, default=str))
    if size > MAX_OPTIONS_BYTES:
        raise ValueError(f"{where} is {size} bytes of JSON, over the limit of {MAX_OPTIONS_BYTES} bytes")


TaskName = Annotated[str, AfterValidator(_check_task)]
LearningRate = Annotated[float, AfterValidator(_check_lr)]


def round_significant(value: float, digits: int = GRID_SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (removes float noise such as 0.0001000000002)."""
    return float(f"{value:.{digits}g}")


def _log_grid_steps(low: float, high: float, points_per_decade: int) -> int:
    """Intervals of the log grid from ``low`` to ``high`` (0 when they are equal); arithmetic only."""
    if low == high:
        return 0
    decades = math.log10(high) - math.log10(low)
    return max(1, math.ceil(decades * points_per_decade - 1e-9))


def log_grid_size_bounds(low: float, high: float, points_per_decade: int) -> tuple[int, int]:
    """(fewest, most) values :func:`log_grid` returns, computed without building the grid.

    The grid has ``steps + 1`` points before rounding. With two or more steps they are at least
    1 / (2 * points_per_decade) decades apart (>= 1/2000 decade: a ratio of 1.0011), which
    :data:`GRID_SIGNIFICANT_DIGITS` significant digits keep apart, so the count is exact; with one step the
    two ends may round to one value.
    """
    steps = _log_grid_steps(low, high, points_per_decade)
    return (steps + 1 if steps >= 2 else 1), steps + 1


def log_grid(low: float, high: float, points_per_decade: int) -> list[float]:
    """Log-spaced learning rates from ``low`` to ``high`` inclusive, at least ``points_per_decade`` a decade.

    The number of points is ``ceil(decades * points_per_decade) + 1``, evenly spaced in log10, so both ends
    are always included; when the range is a whole number of steps the spacing is exactly
    1 / points_per_decade decades. Values are rounded to :data:`GRID_SIGNIFICANT_DIGITS` significant digits.
    """
    if low == high:
        return [round_significant(low)]
    steps = _log_grid_steps(low, high, points_per_decade)
    exponents = np.linspace(math.log10(low), math.log10(high), steps + 1)
    values = [round_significant(10.0**e) for e in exponents]
    values[0], values[-1] = round_significant(low), round_significant(high)
    return sorted(set(values))


class _StrictModel(BaseModel):
    """A frozen model; unknown fields fail with the valid ones listed (pydantic names none of them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = list(cls.model_fields)
            unknown = [key for key in data if key not in valid]
            if unknown:
                raise ValueError(
                    f"Unknown field(s) {', '.join(repr(k) for k in unknown)}; valid: {', '.join(valid)}"
                )
        return data


class LogGrid(_StrictModel):
    """A log-spaced lr grid: ``min`` to ``max`` inclusive, at least ``points_per_decade`` points a decade."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: LearningRate
    max: LearningRate
    points_per_decade: int = Field(default=1, ge=1, le=_MAX_POINTS_PER_DECADE)

    @model_validator(mode="after")
    def _ordered(self) -> LogGrid:
        if self.max < self.min:
            raise ValueError(f"lrs: max ({self.max}) must not be below min ({self.min})")
        most = self.size_bounds()[1]
        if most > MAX_GRID_POINTS:
            raise ValueError(
                f"lrs: {self.min:g} to {self.max:g} at {self.points_per_decade} points a decade is {most} "
                f"learning rates, over the limit of {MAX_GRID_POINTS}; narrow the range or use fewer points"
            )
        return self

    def size_bounds(self) -> tuple[int, int]:
        """(fewest, most) learning rates in the grid, computed without building it."""
        return log_grid_size_bounds(self.min, self.max, self.points_per_decade)

    def values(self) -> list[float]:
        """The grid's learning rates, ascending."""
        return log_grid(self.min, self.max, self.points_per_decade)


#: Characters a label may not contain anywhere: C0 and C1 control characters, DEL, zero-width and bidirectional
#: formatting marks, line/paragraph separators, the byte-order mark and lone surrogates (a label is shown in
#: tables, figures and CSV cells, where these would hide or reorder text).
LABEL_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff"
#: A label: none of :data:`LABEL_FORBIDDEN`, and no white space at either end. The validator uses this pattern and
#: the OpenAPI schema states it, so that the two agree.
LABEL_PATTERN = rf"^[^\s{LABEL_FORBIDDEN}](?:[^{LABEL_FORBIDDEN}]*[^\s{LABEL_FORBIDDEN}])?$"
_LABEL_RE = re.compile(LABEL_PATTERN)


class OptimizerVariant(_StrictModel):
    """One optimiser in a sweep: a registry name, a label for tables, and settings on top of the preset.

    A plain name in a spec (``- adam``) becomes ``{name: adam, label: adam, settings: {}}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    label: str = Field(
        default="",
        min_length=1,
        max_length=64,
        description=(
            "Name of this variant in tables and figures (default: the optimiser's name); 1-64 characters, no white "
            "space at either end, no control characters, zero-width or bidirectional marks, line separators"
        ),
        json_schema_extra={"pattern": LABEL_PATTERN},
    )
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        get_optimizer(name)  # raises "Unknown optimizer 'x'; valid: nero, sgd, ..."
        return name

    @field_validator("label")
    @classmethod
    def _clean_label(cls, label: str) -> str:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(
                f"Invalid label {label!r}; no white space at either end, and no control characters, zero-width or "
                "bidirectional marks or line separators"
            )
        return label

    @field_validator("settings")
    @classmethod
    def _bounded_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        _check_free_form(settings, "settings")
        return settings

    @model_validator(mode="before")
    @classmethod
    def _default_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("label") and isinstance(data.get("name"), str):
            data = {**data, "label": data["name"]}
        return data

    @property
    def default_lr(self) -> float:
        """The registry's default learning rate of this optimiser (the out-of-the-box point)."""
        return get_optimizer(self.name).default_lr


class Resources(_StrictModel):
    """Resources per trial: CPUs (> 0, at most :data:`MAX_CPU_PER_TRIAL`) and GPUs (a fraction in [0, 1] or a
    whole number from 1 to :data:`MAX_GPU_PER_TRIAL`). A worker checks them against its cluster's totals when
    it claims the sweep (a sweep no cluster node set can hold fails at once, naming the resource)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(default=1.0, gt=0, le=MAX_CPU_PER_TRIAL, allow_inf_nan=False)
    gpu: float = 0.0

    @field_validator("gpu")
    @classmethod
    def _gpu_fraction_or_count(cls, gpu: float) -> float:
        if not math.isfinite(gpu) or gpu < 0 or gpu > MAX_GPU_PER_TRIAL or (gpu > 1 and gpu != int(gpu)):
            raise ValueError(
                f"Invalid gpu {gpu}; valid: a fraction in [0, 1] or a whole number of GPUs from 1 to "
                f"{MAX_GPU_PER_TRIAL:g}"
            )
        return gpu


def _lrs_kind(value: Any) -> str:
    # Choose the union branch by shape, so that errors come from that branch only.
    return "range" if isinstance(value, dict | LogGrid) else "list"


class SweepSpec(_StrictModel):
    """A learning-rate sweep: tasks x optimiser variants x lr grid x seeds under one protocol.

    The number of trials (:meth:`trial_count`) must stay within the service's limit, which comes only through
    the validation context: ``context={"max_trials_per_sweep": n}`` to ``model_validate`` (or ``limit=n`` to
    the loaders; ``Settings.spec_context()`` gives a service's), else ``DEFAULT_MAX_TRIALS_PER_SWEEP``;
    validating never reads the environment. ``max_trials`` is the user's own, lower cap (``None``: none).
    A spec already admitted (stored) is read back with :meth:`from_stored`, under no service limit.
    ``task_options`` names are checked here against the sweep's tasks; their fields are checked by the task
    when a trial is built.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=200)
    tasks: list[TaskName] = Field(min_length=1)
    # preset before optimizers: the variants' settings are checked against it.
    preset: Preset = "paper"
    optimizers: list[OptimizerVariant] = Field(min_length=1, max_length=MAX_OPTIMIZERS)
    lrs: Annotated[
        Annotated[list[LearningRate], Tag("list")] | Annotated[LogGrid, Tag("range")],
        Discriminator(_lrs_kind),
    ]
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=MAX_SEEDS)
    protocol: Protocol = "grid"
    tpe_trials: int = Field(default=8, ge=1)
    budget: Budget = "proxy"
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    execution: ExecutionMode = "auto"
    bundle_size: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    max_trials: int | None = Field(default=None, ge=1)
    bracket_max_lrs: int = DEFAULT_BRACKET_MAX_LRS
    bracket_resolution: float = DEFAULT_BRACKET_RESOLUTION

    # --- validation -------------------------------------------------------------------------------

    @field_validator("optimizers", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("lrs", mode="before")
    @classmethod
    def _lrs_shape(cls, value: Any) -> Any:
        # Check here rather than in the union, so an error names one position and not both union branches.
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("Empty lrs; give at least one lr, or {min, max, points_per_decade}")
            if len(value) > MAX_GRID_POINTS:
                raise ValueError(f"{len(value)} lrs, over the limit of {MAX_GRID_POINTS} learning rates")
            lrs = []
            for index, item in enumerate(value):
                try:
                    # YAML 1.1 reads 1e-4 (no dot) as a string: accept numeric strings.
                    lr = float(item) if not isinstance(item, bool) else math.nan
                except (TypeError, ValueError):
                    lr = math.nan
                if not (math.isfinite(lr) and lr > 0):
                    raise ValueError(
                        f"Invalid lr {item!r} at lrs[{index}]; a learning rate must be a positive finite "
                        "number"
                    )
                lrs.append(lr)
            return lrs
        if isinstance(value, dict | LogGrid):
            return value
        raise ValueError(
            f"Invalid lrs {value!r}; valid: a list of positive numbers, or {{min, max, points_per_decade}}"
        )

    @field_validator("bracket_max_lrs")
    @classmethod
    def _bracket_lrs_in_range(cls, value: int) -> int:
        if not 2 <= value <= MAX_BRACKET_LRS:
            raise ValueError(
                f"Invalid bracket_max_lrs {value}; valid: 2 to {MAX_BRACKET_LRS} learning rates per (task, "
                "optimizer), the coarse grid included"
            )
        return value

    @field_validator("bracket_resolution")
    @classmethod
    def _bracket_resolution_in_range(cls, value: float) -> float:
        if not (math.isfinite(value) and MIN_BRACKET_RESOLUTION <= value <= MAX_BRACKET_RESOLUTION):
            raise ValueError(
                f"Invalid bracket_resolution {value}; valid: {MIN_BRACKET_RESOLUTION:g} to "
                f"{MAX_BRACKET_RESOLUTION:g} decades (the largest gap left between the best lr and its better "
                "neighbour)"
            )
        return value

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, tasks: list[str]) -> list[str]:
        duplicates = sorted({t for t in tasks if tasks.count(t) > 1})
        if duplicates:
            raise ValueError(f"Duplicate task(s) {', '.join(duplicates)}; list each task once")
        return tasks

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, seeds: list[int]) -> list[int]:
        out_of_range = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if out_of_range:
            raise ValueError(
                f"Invalid seed(s) {out_of_range[:10]}; valid: integers from 0 to {MAX_SEED} (the store's range)"
            )
        counts = Counter(seeds)
        duplicates = sorted(s for s, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"Duplicate seed(s) {duplicates}; list each seed once")
        return seeds

    @field_validator("optimizers")
    @classmethod
    def _valid_variants(
        cls, variants: list[OptimizerVariant], info: ValidationInfo
    ) -> list[OptimizerVariant]:
        labels = [v.label for v in variants]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(
                f"Duplicate optimizer label(s) {', '.join(duplicates)}; give each variant its own 'label'"
            )
        preset = info.data.get("preset")
        if preset is not None:  # an invalid preset has its own error
            for index, variant in enumerate(variants):
                try:
                    resolve_settings(variant.name, preset, variant.settings)
                except ValueError as exc:
                    raise ValueError(f"optimizers[{index}] ({variant.label!r}) settings: {exc}") from None
        return variants

    @field_validator("task_options")
    @classmethod
    def _options_for_swept_tasks(
        cls, options: dict[str, dict[str, Any]], info: ValidationInfo
    ) -> dict[str, dict[str, Any]]:
        tasks = info.data.get("tasks")
        if tasks is not None:  # invalid tasks have their own error
            unknown = [task for task in options if task not in tasks]
            if unknown:
                raise ValueError(
                    f"task_options for {', '.join(repr(t) for t in unknown)}, which the sweep does not run; "
                    f"valid: {', '.join(tasks)}"
                )
        for task, task_options in options.items():
            _check_free_form(task_options, f"task_options[{task!r}]")
            valid = _task_option_names(task, info.data.get("budget"))
            unknown_names = sorted(set(task_options) - set(valid)) if valid is not None else []
            if unknown_names:
                raise ValueError(
                    f"Unknown task option(s) {', '.join(unknown_names)} for task {task!r}; "
                    f"valid: {', '.join(valid or [])}"
                )
        return options

    @model_validator(mode="after")
    def _bracket_grid_fits(self) -> SweepSpec:
        """Under ``bracket``: the coarse grid has two lrs or more (its spacing is the step of an extension) and
        every optimiser's coarse grid (with its default lr) fits in ``bracket_max_lrs``."""
        if self.protocol != "bracket":
            return self
        fewest = self._base_size_bounds()[0]
        if fewest > self.bracket_max_lrs:  # arithmetic: no grid is built for a coarse grid far too large
            raise ValueError(
                f"bracket_max_lrs {self.bracket_max_lrs} is below the coarse grid of at least {fewest} lrs; "
                "raise bracket_max_lrs or give fewer lrs"
            )
        if len(self.base_grid()) < 2:
            raise ValueError(
                "protocol bracket needs at least two lrs: the coarse grid's spacing is the step by which it "
                "extends past an edge"
            )
        for label in self.labels:
            size = len(self.grid_for(label))
            if size > self.bracket_max_lrs:
                raise ValueError(
                    f"bracket_max_lrs {self.bracket_max_lrs} is below the coarse grid of {label!r} ({size} lrs, "
                    "its default lr included); raise bracket_max_lrs or give fewer lrs"
                )
        return self

    @model_validator(mode="after")
    def _within_trial_limit(self, info: ValidationInfo) -> SweepSpec:
        context = info.context or {}
        if context.get(_ADMITTED):
            ceiling = None  # stored under the limit of its day: today's limit does not apply
        else:
            ceiling = int(context.get("max_trials_per_sweep") or DEFAULT_MAX_TRIALS_PER_SWEEP)
        if ceiling is not None and self.max_trials is not None and self.max_trials > ceiling:
            raise ValueError(
                f"max_trials {self.max_trials} is above the service limit of {ceiling} trials per sweep"
            )
        limits = [limit for limit in (self.max_trials, ceiling) if limit is not None]
        if not limits:
            return self
        limit = min(limits)
        fewest = self.fewest_trials()  # arithmetic: no grid is built for a sweep that is far too large
        count = fewest if fewest > limit else self.trial_count()
        if count > limit:
            if self.protocol == "bracket":
                raise ValueError(
                    f"The bracket sweep may run up to {count} trials (bracket_max_lrs {self.bracket_max_lrs} x "
                    f"{len(self.seeds)} seeds x {len(self.optimizers)} optimizers x {len(self.tasks)} tasks), over "
                    f"the limit of {limit} (max_trials); lower bracket_max_lrs or use fewer tasks, optimizers or "
                    "seeds"
                )
            at_least = "at least " if count == fewest and fewest != self._most_trials() else ""
            raise ValueError(
                f"The sweep expands to {at_least}{count} trials, over the limit of {limit} (max_trials); "
                "use fewer tasks, optimizers, learning rates or seeds"
            )
        return self

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, format: SpecFormat = "yaml", *, limit: int | None = None) -> SweepSpec:
        """Parse a spec from YAML or JSON text; syntax errors say where, validation errors name the field."""
        if format == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"Invalid JSON spec: {exc}") from None
        elif format == "yaml":
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"Invalid YAML spec: {exc}") from None
        else:
            raise ValueError(f"Invalid spec format {format!r}; valid: yaml, json")
        if not isinstance(data, dict):
            raise ValueError(f"A sweep spec must be a mapping of fields; got {type(data).__name__}")
        context = {"max_trials_per_sweep": limit} if limit is not None else None
        return cls.model_validate(data, context=context)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SweepSpec:
        """A spec as the store holds it (admitted when it was queued): validated again, but not against the
        service's trial limit of today (the user's own ``max_trials`` still applies)."""
        return cls.model_validate(data, context={_ADMITTED: True})

    @classmethod
    def from_file(cls, path: str | Path, *, limit: int | None = None) -> SweepSpec:
        """Load a spec from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        formats: dict[str, SpecFormat] = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
        suffix = path.suffix.lower()
        if suffix not in formats:
            raise ValueError(f"Unknown spec file type {suffix!r} ({path}); valid: .yaml, .yml, .json")
        return cls.from_text(path.read_text(encoding="utf-8"), formats[suffix], limit=limit)

    # --- derived values ---------------------------------------------------------------------------

    @property
    def labels(self) -> list[str]:
        """The optimiser variants' labels, in spec order."""
        return [variant.label for variant in self.optimizers]

    def variant(self, label: str) -> OptimizerVariant:
        """The optimiser variant called ``label``; unknown labels fail with the valid ones."""
        for variant in self.optimizers:
            if variant.label == label:
                return variant
        raise ValueError(f"Unknown optimizer label {label!r}; valid: {', '.join(self.labels)}")

    def bracket_step(self) -> float:
        """The step of a ``bracket`` extension past an edge, in decades: the median gap of the spec's lrs in log10
        (1 / points_per_decade for a log grid of whole steps)."""
        grid = self.base_grid()
        if len(grid) < 2:
            raise ValueError("A bracket step needs at least two lrs")
        return float(np.median(np.diff(np.log10(grid))))

    def base_grid(self) -> list[float]:
        """The spec's learning rates (ascending, without duplicates), before adding default lrs."""
        values = self.lrs.values() if isinstance(self.lrs, LogGrid) else self.lrs
        return sorted(set(values))

    def grid_for(self, label: str) -> list[float]:
        """The lrs swept for the variant ``label``: the base grid plus its default lr, ascending."""
        default = self.variant(label).default_lr
        grid = self.base_grid()
        if not any(same_lr(lr, default) for lr in grid):
            grid = sorted([*grid, default])
        return grid

    def _count(self, grid_sizes: list[int]) -> int:
        """Trials for these per-variant grid sizes (see :meth:`trial_count`)."""
        if self.protocol == "grid":
            per_task = sum(size * len(self.seeds) for size in grid_sizes)
        elif self.protocol == "paper":
            per_task = sum(size + len(self.seeds) - 1 for size in grid_sizes)
        elif self.protocol == "bracket":  # the worst case: every (task, variant) spends its whole budget
            per_task = self.bracket_max_lrs * len(self.seeds) * len(grid_sizes)
        else:
            per_task = self.tpe_trials * len(grid_sizes)
        return per_task * len(self.tasks)

    def _base_size_bounds(self) -> tuple[int, int]:
        if isinstance(self.lrs, LogGrid):
            return self.lrs.size_bounds()
        size = len(set(self.lrs))
        return size, size

    def fewest_trials(self) -> int:
        """A lower bound of :meth:`trial_count`, computed without building any grid (each variant's grid
        holds at least the base grid; its default lr may or may not be on it)."""
        return self._count([self._base_size_bounds()[0]] * len(self.optimizers))

    def _most_trials(self) -> int:
        return self._count([self._base_size_bounds()[1] + 1] * len(self.optimizers))

    def trial_count(self) -> int:
        """The number of trials the sweep runs.

        grid: sum over (task, variant) of |grid| x seeds; paper: |grid| + (seeds - 1) per (task, variant) (the
        grid at the first seed, then the best lr with the other seeds); tpe: ``tpe_trials`` per (task, variant);
        bracket: the most it may run, ``bracket_max_lrs`` x seeds per (task, variant) (it stops earlier once the
        best lr is bracketed and resolved).
        """
        if self.protocol in ("tpe", "bracket"):
            return self._count([0] * len(self.optimizers))
        base = self.base_grid()
        sizes = [
            len(base) + (0 if any(same_lr(lr, variant.default_lr) for lr in base) else 1)
            for variant in self.optimizers
        ]
        return self._count(sizes)


def _task_option_names(task: str, budget: str | None) -> list[str] | None:
    """The config fields ``task_options`` may set for ``task`` under ``budget`` (all budgets' when it is not
    known), or ``None`` when the task's module cannot be imported here (its trials then check them)."""
    import dataclasses

    from nero_study.tasks.registry import get_task

    try:
        budgets = get_task(task).budgets
    except ImportError:
        return None
    configs = [budgets[budget]] if budget in budgets else list(budgets.values())
    return sorted({field.name for config in configs for field in dataclasses.fields(config)})


def demo_spec() -> SweepSpec:
    """The small sweep seeded on an empty database so the dashboards fill within a minute or two on a CPU.

    Two proxy tasks (one vision, one language) at the ``smoke`` budget, the four optimisers of the paper
    with the paper preset, lr 1e-4 .. 1 by decades (every default lr is on it), one seed: 40 short trials.
    """
    return SweepSpec.model_validate(
        {
            "name": "demo: Nero vs SGD, Adam, LAMB (smoke budget)",
            "tasks": ["digits-mlp", "text-lm"],
            "optimizers": ["nero", "sgd", "adam", "lamb"],
            "lrs": {"min": 1e-4, "max": 1.0, "points_per_decade": 1},
            "seeds": [0],
            "protocol": "grid",
            "budget": "smoke",
            "preset": "paper",
        }
    )


__all__ = [
    "GRID_SIGNIFICANT_DIGITS",
    "MAX_CPU_PER_TRIAL",
    "MAX_GPU_PER_TRIAL",
    "DEFAULT_BRACKET_MAX_LRS",
    "DEFAULT_BRACKET_RESOLUTION",
    "MAX_BRACKET_LRS",
    "MAX_BRACKET_RESOLUTION",
    "MAX_GRID_POINTS",
    "MIN_BRACKET_RESOLUTION",
    "MAX_OPTIONS_BYTES",
    "MAX_OPTIONS_DEPTH",
    "MAX_SEED",
    "log_grid_size_bounds",
    "LogGrid",
    "OptimizerVariant",
    "Resources",
    "SweepSpec",
    "demo_spec",
    "log_grid",
    "round_significant",
]
