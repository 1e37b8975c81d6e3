"""From a :class:`SweepSpec` to the trials to run, under its protocol (docs/architecture.md).

- ``grid``: every (task, optimiser variant, lr in its grid, seed), all in phase ``grid``.
- ``paper``: phase ``grid`` is the grid with the first seed only; once it has finished,
  :func:`plan_seed_repeats` repeats the best lr of each (task, optimiser) with the remaining seeds
  (phase ``seeds``).
- ``tpe``: nothing is planned up front; the engine samples log-lr with Optuna's TPE inside
  :func:`tpe_space`, ``tpe_trials`` times per (task, optimiser).
- ``bracket``: phase ``bracket-0`` is the grid with every seed; once a round has finished,
  :func:`plan_bracket_round` adds each (task, optimiser)'s next lr (``nero_study.study.bracket``) with every
  seed, in phase ``bracket-N`` (N: that pair's round), until no pair adds one.
"""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nero_study.study.analysis import analyze_sweep
from nero_study.study.bracket import decide
from nero_study.study.spec import SweepSpec
from nero_study.tasks.base import TrialSpec
from nero_study.vocabulary import bracket_phase, bracket_round


@dataclass(frozen=True)
class PlannedTrial:
    """One trial to run and the protocol phase it belongs to (a :data:`~nero_study.vocabulary.Phase`, or a
    bracket round's ``bracket-N``)."""

    spec: TrialSpec
    phase: str

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, **self.spec.to_dict()}


def make_trial_spec(spec: SweepSpec, task: str, label: str, lr: float, seed: int) -> TrialSpec:
    """The :class:`TrialSpec` of one (task, variant, lr, seed) point of ``spec``.

    ``hyperparameters`` are the variant's settings (applied on top of the spec's preset by the runner);
    ``task_options`` come from ``spec.task_options[task]``.
    """
    variant = spec.variant(label)
    return TrialSpec(
        task=task,
        optimizer=variant.name,
        lr=float(lr),
        seed=int(seed),
        budget=spec.budget,
        preset=spec.preset,
        hyperparameters=dict(variant.settings),
        task_options=dict(spec.task_options.get(task, {})),
        label=variant.label,
    )


def plan_trials(spec: SweepSpec) -> list[PlannedTrial]:
    """The trials known up front, ordered task, variant, lr (ascending), seed.

    ``grid``: the whole grid with every seed. ``paper``: the grid with the first seed (phase 1; phase 2
    comes from :func:`plan_seed_repeats`). ``tpe``: empty (the engine samples lrs as it goes). ``bracket``:
    the grid with every seed, phase ``bracket-0`` (later rounds come from :func:`plan_bracket_round`).
    """
    if spec.protocol == "tpe":
        return []
    seeds = spec.seeds if spec.protocol in ("grid", "bracket") else spec.seeds[:1]
    phase = bracket_phase(0) if spec.protocol == "bracket" else "grid"
    return [
        PlannedTrial(make_trial_spec(spec, task, label, lr, seed), phase)
        for task in spec.tasks
        for label in spec.labels
        for lr in spec.grid_for(label)
        for seed in seeds
    ]


def auto_execution_by_task(spec: SweepSpec) -> dict[str, tuple[str, str]]:
    """Per task, what ``execution: auto`` runs for the grid of ``spec`` and why (the engine's rule,
    :func:`nero_study.study.batched.auto_execution`, on the grid's trials with the first seed)."""
    from nero_study.study.batched import auto_execution

    return {
        task: auto_execution(
            {label: [make_trial_spec(spec, task, label, lr, spec.seeds[0]) for lr in spec.grid_for(label)]
             for label in spec.labels}
        )
        for task in spec.tasks
    }  # fmt: skip


def _as_records(results: Any) -> list[Any]:
    """Results as a list of mappings or plain objects (a DataFrame gives its rows; a TrialResult its dict)."""
    if hasattr(results, "columns") and hasattr(results, "to_dict"):  # a pandas DataFrame
        return list(results.to_dict("records"))
    return [
        record if isinstance(record, Mapping) or not hasattr(record, "to_dict") else record.to_dict()
        for record in results
    ]


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def _record_label(record: Any) -> str:
    label = _get(record, "label")
    return label if isinstance(label, str) and label else str(_get(record, "optimizer"))


def best_lrs(spec: SweepSpec, results: Iterable[Any]) -> dict[tuple[str, str], float]:
    """The best lr per (task, label) among finished results; pairs with no successful trial are absent.

    ``results``: mappings, objects with ``to_dict()`` (``TrialResult``) or attributes, or a DataFrame, with
    ``task``, ``label`` (or ``optimizer``), ``lr``, ``status``, ``metric`` and ``lower_is_better``.
    Only ``succeeded`` trials with a finite metric compete (diverged and failed trials are never best);
    an lr's score is the mean over its results. Ties go to the smaller lr. Results for tasks or labels not
    in ``spec``, and results with a seed other than the spec's first (phase 2), are ignored.
    """
    sums: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    lower: dict[str, bool] = {}
    labels = set(spec.labels)
    for record in _as_records(results):
        task = _get(record, "task")
        label = _get(record, "label")
        if not isinstance(label, str) or not label:  # missing, or NaN from a DataFrame
            label = _get(record, "optimizer")
        if task not in spec.tasks or label not in labels or _get(record, "status") != "succeeded":
            continue
        seed = _get(record, "seed")
        if seed is not None and seed == seed and int(seed) != spec.seeds[0]:  # (seed == seed: not NaN)
            continue  # only phase 1 (the first seed) decides, so a resumed sweep picks the same lr
        metric = _get(record, "metric")
        if metric is None or not math.isfinite(float(metric)):
            continue
        lower[task] = bool(_get(record, "lower_is_better", True))
        sums[(task, label)][float(_get(record, "lr"))].append(float(metric))
    best: dict[tuple[str, str], float] = {}
    for (task, label), per_lr in sums.items():
        sign = 1.0 if lower[task] else -1.0
        best[(task, label)] = min(per_lr, key=lambda lr: (sign * sum(per_lr[lr]) / len(per_lr[lr]), lr))
    return best


def plan_seed_repeats(spec: SweepSpec, results: Iterable[Any]) -> list[PlannedTrial]:
    """Phase 2 of the ``paper`` protocol: each (task, optimiser)'s best phase-1 lr with the remaining seeds.

    ``results`` are the finished phase-1 results (see :func:`best_lrs`). A (task, optimiser) whose phase-1
    trials all diverged or failed gets no repeats.
    """
    best = best_lrs(spec, results)
    return [
        PlannedTrial(make_trial_spec(spec, task, label, best[(task, label)], seed), "seeds")
        for task in spec.tasks
        for label in spec.labels
        if (task, label) in best
        for seed in spec.seeds[1:]
    ]


def plan_bracket_round(spec: SweepSpec, results: Iterable[Any]) -> list[PlannedTrial]:
    """The next round of the ``bracket`` protocol: per (task, optimiser) whose trials have all finished, the lr
    the bracket rule adds (:func:`nero_study.study.bracket.decide`), with every seed, in phase ``bracket-N``
    where N is one more than the pair's last round. Empty when every pair is done (or waits on its trials).

    ``results``: the sweep's trial records (mappings or a DataFrame's rows) with ``phase`` and what
    :func:`~nero_study.study.analysis.analyze_sweep` needs. Deterministic in the results, so a resumed sweep
    plans the trials it had stored (``add_trials`` inserts them once).
    """
    records = _as_records(results)
    analysis = analyze_sweep(records, protocol="bracket")
    have = {(s.task, s.label) for s in analysis.per_optimizer}
    planned: list[PlannedTrial] = []
    for task in spec.tasks:
        for label in spec.labels:
            rows = [r for r in records if _get(r, "task") == task and _record_label(r) == label]
            if (task, label) not in have or any(_get(r, "status") in ("pending", "running") for r in rows):
                continue
            step = decide(spec, analysis, task, label)
            if step.lr is None:
                continue
            last = max((index for r in rows if (index := bracket_round(_get(r, "phase"))) is not None), default=0)
            phase = bracket_phase(last + 1)
            planned.extend(
                PlannedTrial(make_trial_spec(spec, task, label, step.lr, seed), phase) for seed in spec.seeds
            )
    return planned


def tpe_space(spec: SweepSpec, label: str) -> tuple[float, float]:
    """The (low, high) learning rates TPE searches in log space for ``label``: the ends of its grid."""
    grid = spec.grid_for(label)
    return grid[0], grid[-1]


def stored_planned_trials(sweep: Any) -> int | None:
    """How many trials a stored sweep plans: the count stored at submission (``sweep.planned_trials``),
    else counted from its stored spec, for sweeps stored before migration 0002 (cached per sweep: a
    stored spec never changes, and validating one builds its optimisers). ``None`` when the stored spec
    no longer validates (older rules or registries): the sweep still shows, its count is unknown.
    """
    if getattr(sweep, "planned_trials", None) is not None:
        return int(sweep.planned_trials)
    return _count_stored_spec(str(sweep.id), json.dumps(dict(sweep.spec or {}), sort_keys=True, default=str))


@functools.lru_cache(maxsize=4096)
def _count_stored_spec(sweep_id: str, spec_json: str) -> int | None:
    from pydantic import ValidationError

    try:
        spec = SweepSpec.from_stored(json.loads(spec_json))
    except (ValidationError, ValueError, TypeError, KeyError):
        return None
    return spec.trial_count()


__all__ = [
    "PlannedTrial",
    "auto_execution_by_task",
    "best_lrs",
    "make_trial_spec",
    "plan_bracket_round",
    "plan_seed_repeats",
    "plan_trials",
    "stored_planned_trials",
    "tpe_space",
]
