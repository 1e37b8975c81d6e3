"""Findings across sweeps: every finished sweep's per-task verdicts gathered into one task x optimiser table.

Built only from each sweep's :class:`~nero_study.study.verdict.SweepVerdict` (itself drawn from the sweep's
analysis), so a finding says what that sweep's own page says; nothing is recomputed across sweeps.

- **Which sweeps**: those that ran to their end (``succeeded`` or ``trials_failed``,
  :data:`~nero_study.vocabulary.SWEEP_COMPLETED`). Queued and running sweeps have no answer yet; ``failed`` and
  ``cancelled`` ones stopped before their grid was done, and a verdict from part of a grid would compare
  optimisers on different lrs. A ``trials_failed`` sweep is kept, with its caveat (its failed trials are left
  out of its metrics, and the optimisers they belong to say so in their reasons).
- **A row** is one (task, optimiser label) and holds one *entry* per sweep that ran it: that sweep's verdict
  (``winner``, ``behind`` or ``inconclusive``), out-of-the-box regret, tuned best (metric and lr), seeds and
  reasons. Numbers from different budgets or presets are not pooled; the filters (budget, preset, task)
  choose which sweeps a table reads.
- **A row's overall answer**: ``winner`` when every sweep with a conclusive verdict (winner or behind) says
  winner, ``behind`` when every one says behind, ``mixed`` when they disagree, ``inconclusive`` when none is
  conclusive.
- **The headline**: for the plain Nero variant (label :data:`HEADLINE_LABEL`), on how many of the tasks it ran
  its overall answer is ``winner``, across how many finished sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from nero_study.study.analysis import SweepAnalysis
from nero_study.study.verdict import SweepVerdict, VerdictStatus, sweep_verdict
from nero_study.vocabulary import BUDGETS, PRESETS, SWEEP_COMPLETED

Overall = Literal["winner", "behind", "mixed", "inconclusive"]
OVERALLS: tuple[Overall, ...] = ("winner", "behind", "mixed", "inconclusive")
#: The optimiser label the headline speaks of: the plain Nero variant, the study's subject.
HEADLINE_LABEL = "nero"
#: The statuses of the sweeps that findings read.
FINDINGS_STATUSES: tuple[str, ...] = SWEEP_COMPLETED


@dataclass(frozen=True)
class SweepFindings:
    """One finished sweep's contribution: what identifies and filters it, and its verdict."""

    sweep_id: str
    name: str
    status: str
    budget: str | None
    preset: str | None
    protocol: str | None
    seeds: tuple[int, ...]
    finished_at: datetime | None
    failed_trials: int
    analysis_error: str | None
    verdict: SweepVerdict
    optimizers: dict[tuple[str, str], str] = field(default_factory=dict)  # (task, label) -> registry name

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task.task for task in self.verdict.tasks)

    @property
    def caveats(self) -> tuple[str, ...]:
        """What a reader must know about the whole sweep before trusting its rows."""
        caveats = []
        if self.failed_trials:
            plural = "s" if self.failed_trials != 1 else ""
            caveats.append(f"{self.failed_trials} failed trial{plural} left out of its metrics")
        if self.analysis_error:
            caveats.append(f"cannot analyse its trials: {self.analysis_error}")
        return tuple(caveats)


@dataclass(frozen=True)
class FindingEntry:
    """One sweep's verdict on one (task, optimiser)."""

    sweep_id: str
    sweep_name: str
    sweep_status: str
    budget: str | None
    preset: str | None
    optimizer: str
    status: VerdictStatus
    default_lr: float
    ootb: float
    ootb_regret: float
    ootb_seeds: int
    best: float
    eta_star: float
    best_seeds: int
    tuned_gap: float
    lr_factor: float
    edge: str | None
    failed: int
    reasons: tuple[str, ...]
    caveats: tuple[str, ...]  # the sweep's own (failed trials, analysis error)


@dataclass(frozen=True)
class FindingRow:
    """One (task, optimiser label): its entries, newest sweep first, and their overall answer."""

    task: str
    label: str
    metric_name: str
    lower_is_better: bool
    entries: tuple[FindingEntry, ...]

    def count(self, status: VerdictStatus) -> int:
        return sum(1 for entry in self.entries if entry.status == status)

    @property
    def overall(self) -> Overall:
        conclusive = {entry.status for entry in self.entries if entry.status != "inconclusive"}
        if not conclusive:
            return "inconclusive"
        if conclusive == {"winner"}:
            return "winner"
        if conclusive == {"behind"}:
            return "behind"
        return "mixed"


@dataclass(frozen=True)
class LabelTally:
    """One optimiser label over the tasks it ran: how many have each overall answer."""

    label: str
    tasks: int
    counts: dict[str, int]  # per Overall


@dataclass(frozen=True)
class Filters:
    """Which sweeps a table reads (``None``: any)."""

    budget: str | None = None
    preset: str | None = None
    task: str | None = None

    def describe(self) -> str:
        parts = [f"{name} {value}" for name, value in asdict(self).items() if value is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class Findings:
    """The findings table for some filters: the sweeps it reads, its rows, per-label tallies and the headline."""

    filters: Filters
    sweeps: tuple[SweepFindings, ...]  # the sweeps that contribute (newest first)
    rows: tuple[FindingRow, ...]
    tallies: tuple[LabelTally, ...]
    headline: str
    available_tasks: tuple[str, ...]  # the tasks of every finished sweep, whatever the filters
    note: str | None  # why the table is empty, when it is


def filter_problems(filters: Filters) -> list[tuple[str, str]]:
    """(field, message) for each filter outside its closed set: budgets and presets are the vocabulary's.
    A task is open (imported sweeps bring their own task names): an unknown one gives an empty table."""
    problems = []
    if filters.budget is not None and filters.budget not in BUDGETS:
        problems.append(("budget", f"Unknown budget {filters.budget[:100]!r}; valid: {', '.join(BUDGETS)}"))
    if filters.preset is not None and filters.preset not in PRESETS:
        problems.append(("preset", f"Unknown preset {filters.preset[:100]!r}; valid: {', '.join(PRESETS)}"))
    return problems


def _one_value(spec: Mapping[str, Any], key: str, column: Iterable[Any]) -> str | None:
    """The spec's value of ``key``, else the trials' one value of it (imported sweeps), else ``None``."""
    value = spec.get(key)
    if isinstance(value, str):
        return value
    values = {str(item) for item in column if item is not None and item == item}
    return values.pop() if len(values) == 1 else None


def sweep_findings(
    *,
    sweep_id: str,
    name: str,
    status: str,
    spec: Mapping[str, Any],
    trials: Any,
    analysis: SweepAnalysis,
    analysis_error: str | None = None,
    finished_at: datetime | None = None,
) -> SweepFindings:
    """A finished sweep's findings from its stored spec, its trials frame and its analysis (the sweep page's)."""
    columns = getattr(trials, "columns", ())
    budget = _one_value(spec, "budget", trials["budget"] if "budget" in columns else ())
    preset = _one_value(spec, "preset", trials["preset"] if "preset" in columns else ())
    seeds = tuple(int(seed) for seed in spec.get("seeds", []) or [] if isinstance(seed, int))
    return SweepFindings(
        sweep_id=sweep_id,
        name=name,
        status=status,
        budget=budget,
        preset=preset,
        protocol=spec.get("protocol") if isinstance(spec.get("protocol"), str) else None,
        seeds=seeds,
        finished_at=finished_at,
        failed_trials=analysis.failed_trials,
        analysis_error=analysis_error,
        verdict=sweep_verdict(analysis),
        optimizers={(s.task, s.label): s.optimizer for s in analysis.per_optimizer},
    )


def _selected(sweep: SweepFindings, filters: Filters) -> bool:
    if filters.budget is not None and sweep.budget != filters.budget:
        return False
    if filters.preset is not None and sweep.preset != filters.preset:
        return False
    return filters.task is None or filters.task in sweep.tasks


def _newest_first(sweep: SweepFindings) -> tuple[float, str]:
    stamp = sweep.finished_at.timestamp() if sweep.finished_at is not None else -math.inf
    return (-stamp, sweep.sweep_id)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def headline(rows: Sequence[FindingRow], sweeps: int, *, label: str = HEADLINE_LABEL, filtered: str = "") -> str:
    """One sentence: on how many of the tasks it ran ``label``'s overall answer is winner, across ``sweeps``.
    ``filtered``: the filters in words (``budget smoke``), said when no sweep matches them."""
    if sweeps == 0:
        return f"No finished sweep matches {filtered}." if filtered else "No finished sweeps to draw findings from yet."
    mine = [row for row in rows if row.label == label]
    name = label.capitalize() if label == HEADLINE_LABEL else label
    if not mine:
        return f"{name} did not run in the {_plural(sweeps, 'finished sweep')} shown."
    counts = {overall: sum(1 for row in mine if row.overall == overall) for overall in OVERALLS}
    text = (
        f"{name} out-of-the-box winner on {counts['winner']} of {_plural(len(mine), 'task')} across "
        f"{_plural(sweeps, 'finished sweep')}"
    )
    rest = [
        f"{words} on {counts[overall]}"
        for overall, words in (("behind", "behind"), ("mixed", "mixed"), ("inconclusive", "not established"))
        if counts[overall]
    ]
    return text + (f" ({', '.join(rest)})." if rest else ".")


def gather_findings(sweeps: Iterable[SweepFindings], filters: Filters | None = None) -> Findings:
    """The findings table of ``sweeps`` (finished ones; others are left out) under ``filters``."""
    filters = filters or Filters()
    finished = sorted((s for s in sweeps if s.status in FINDINGS_STATUSES), key=_newest_first)
    available = tuple(sorted({task for sweep in finished for task in sweep.tasks}))
    chosen = tuple(sweep for sweep in finished if _selected(sweep, filters))
    grouped: dict[tuple[str, str], list[FindingEntry]] = {}
    meta: dict[tuple[str, str], tuple[str, bool]] = {}
    labels: list[str] = []
    for sweep in reversed(chosen):  # oldest first: labels in the order they first appeared
        for task in sweep.verdict.tasks:
            for verdict in task.optimizers:
                if verdict.label not in labels:
                    labels.append(verdict.label)
    for sweep in chosen:
        for task in sweep.verdict.tasks:
            if filters.task is not None and task.task != filters.task:
                continue
            for verdict in task.optimizers:
                key = (task.task, verdict.label)
                meta.setdefault(key, (task.metric_name, task.lower_is_better))
                grouped.setdefault(key, []).append(
                    FindingEntry(
                        sweep_id=sweep.sweep_id,
                        sweep_name=sweep.name,
                        sweep_status=sweep.status,
                        budget=sweep.budget,
                        preset=sweep.preset,
                        optimizer=sweep.optimizers.get(key, verdict.label),
                        status=verdict.status,
                        default_lr=verdict.default_lr,
                        ootb=verdict.ootb,
                        ootb_regret=verdict.ootb_regret,
                        ootb_seeds=verdict.ootb_seeds,
                        best=verdict.best,
                        eta_star=verdict.eta_star,
                        best_seeds=verdict.best_seeds,
                        tuned_gap=verdict.tuned_gap,
                        lr_factor=verdict.lr_factor,
                        edge=verdict.edge,
                        failed=verdict.failed,
                        reasons=verdict.reasons,
                        caveats=sweep.caveats,
                    )
                )
    rows = tuple(
        FindingRow(
            task=task,
            label=label,
            metric_name=meta[(task, label)][0],
            lower_is_better=meta[(task, label)][1],
            entries=tuple(grouped[(task, label)]),
        )
        for task, label in sorted(grouped, key=lambda key: (key[0], labels.index(key[1])))
    )
    tallies = []
    for label in labels:
        mine = [row.overall for row in rows if row.label == label]
        if mine:
            counts = {overall: mine.count(overall) for overall in OVERALLS}
            tallies.append(LabelTally(label=label, tasks=len(mine), counts=counts))
    note = None
    if not rows:
        if not finished:
            note = "No sweep has finished yet."
        elif not chosen:
            note = f"No finished sweep matches {filters.describe()}."
            if filters.task is not None and filters.task not in available:
                note += f" Tasks with findings: {', '.join(available) or 'none'}."
        else:
            note = "The finished sweeps that match have no verdict (no finished trials, or they cannot be analysed)."
    return Findings(
        filters=filters,
        sweeps=chosen,
        rows=rows,
        tallies=tuple(tallies),
        headline=headline(rows, len(chosen), filtered=filters.describe()),
        available_tasks=available,
        note=note,
    )


__all__ = [
    "FINDINGS_STATUSES",
    "HEADLINE_LABEL",
    "OVERALLS",
    "FindingEntry",
    "FindingRow",
    "Filters",
    "Findings",
    "LabelTally",
    "SweepFindings",
    "filter_problems",
    "gather_findings",
    "headline",
    "sweep_findings",
]
