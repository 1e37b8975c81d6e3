"""The ``bracket`` protocol: a coarse lr grid that widens and refines itself until it brackets the best lr.

Per (task, optimiser), round 0 (phase ``bracket-0``) is the spec's grid with the optimiser's default lr, on every
seed. Each later round adds at most one lr (again on every seed), chosen by :func:`next_lr` from the lrs tried so
far and how they ended:

1. *Extend*: while the best lr is the highest tried and did not diverge, add the lr one grid step above it; while
   it is the lowest tried, add the lr one step below. The step is the spec's grid spacing in log10
   (:meth:`SweepSpec.bracket_step`). Extending stops by itself: a new high lr that diverged (or a new low lr that
   made no progress, its metric no better than chance) is worse than the best, so the best is no longer at that
   edge. A best lr with a diverged seed is not extended past (the next lr up would diverge further).
2. *Refine*: once the best lr has a neighbour on each side (or cannot be extended), add the geometric midpoint
   of the best lr and its better neighbour, until the gap between them is at most ``bracket_resolution`` decades.
3. *Stop* when resolved, when ``bracket_max_lrs`` lrs have been tried (the budget, the coarse grid included),
   or when no lr beat chance and neither direction can help (low lrs made no progress, high ones diverged).
   An lr tried already is never added again (one whose trials all failed is no evidence, and trying it again
   would bring none): the rule falls back to its next choice (refining, when an extension is blocked), and
   says so when it stops.

If no lr beat chance: all diverged extends downward, none diverged extends upward.

Values are oriented so that lower is better; ``chance`` is the metric at initialisation/chance (the analysis'
``m0``); an lr's value is its mean over seeds with a diverged seed counted at chance (the analysis' convention),
NaN when every trial at it failed. :func:`next_lr` is pure: the engine (``SweepEngine``) feeds it the analysis of
the stored trials after each round; pages and ``nero-study report`` replay it to show the rounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from nero_study.json_safe import json_safe
from nero_study.study.analysis import SweepAnalysis, analyze_sweep
from nero_study.study.spec import SweepSpec, round_significant
from nero_study.vocabulary import bracket_round, same_lr

#: Tolerance on a gap in decades: lrs are kept to 6 significant digits (a relative error up to 5e-6 each, so
#: log10 of a ratio of two moves by at most 2 log10(1 + 5e-6) = 4.3e-6 decades).
GAP_TOLERANCE_DECADES = 1e-5

StepKind = Literal["extend-up", "extend-down", "refine", "done"]


@dataclass(frozen=True)
class LrOutcome:
    """How one tried lr ended: ``value`` oriented (lower is better; NaN: every trial failed), and whether any of
    its seeds diverged."""

    lr: float
    value: float
    diverged: bool = False


@dataclass(frozen=True)
class BracketStep:
    """What :func:`next_lr` decided: the lr to add (``None`` when done) and why, in words."""

    kind: StepKind
    lr: float | None
    reason: str


def _lr_text(lr: float) -> str:
    return f"{lr:g}"


def _gap(a: float, b: float) -> float:
    return abs(math.log10(a) - math.log10(b))


def next_lr(
    tried: Sequence[LrOutcome], *, chance: float, step: float, resolution: float, max_lrs: int
) -> BracketStep:
    """The next lr of one (task, optimiser) under the bracket rule (module docstring), or why there is none.

    ``tried``: every lr run so far (failed ones with a NaN value); ``chance``: the metric at chance, oriented;
    ``step``: the extension step, in decades (> 0); ``resolution``: the gap, in decades, at which the best lr is
    resolved; ``max_lrs``: the most lrs this (task, optimiser) may try.
    """
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"Invalid step {step}; the extension step must be a positive number of decades")
    evidence = sorted((o for o in tried if math.isfinite(o.value)), key=lambda o: o.lr)
    if not evidence:
        return BracketStep("done", None, "no evidence: every trial failed")
    best_index = min(range(len(evidence)), key=lambda i: (evidence[i].value, evidence[i].lr))
    best = evidence[best_index]
    lowest, highest = evidence[0], evidence[-1]
    # The lrs worth adding, in order of preference: past an edge first, then between the best and a neighbour.
    proposals: list[tuple[StepKind, float, str]] = []
    resolved = ""
    if not best.value < chance:
        if all(o.diverged for o in evidence):
            proposals.append(("extend-down", lowest.lr * 10**-step, "every lr diverged"))
        elif not any(o.diverged for o in evidence):
            proposals.append(("extend-up", highest.lr * 10**step, "no lr made progress and none diverged"))
        else:
            return BracketStep("done", None, "no lr beat chance: the low lrs made no progress, the high ones diverged")
    else:
        if best is highest and not best.diverged:
            proposals.append(("extend-up", best.lr * 10**step, f"best lr {_lr_text(best.lr)} is the highest tried"))
        if best is lowest:
            proposals.append(("extend-down", best.lr * 10**-step, f"best lr {_lr_text(best.lr)} is the lowest tried"))
        neighbours = [evidence[i] for i in (best_index - 1, best_index + 1) if 0 <= i < len(evidence)]
        if neighbours:
            better = min(neighbours, key=lambda o: (o.value, o.lr))
            gap = _gap(best.lr, better.lr)
            pair = f"best lr {_lr_text(best.lr)} and its better neighbour {_lr_text(better.lr)}"
            if gap <= resolution + GAP_TOLERANCE_DECADES:
                resolved = f"resolved: {pair.replace(' and', ',')} is {gap:.3g} decades away (<= {resolution:g})"
            else:
                proposals.append(("refine", math.sqrt(best.lr * better.lr), f"between {pair} ({gap:.3g} decades)"))
    blocked = []
    for kind, lr, why in proposals:
        if not (math.isfinite(lr) and lr > 0):
            blocked.append(f"the next lr is out of the floating-point range ({why})")
            continue
        lr = round_significant(lr)
        same = [o for o in tried if same_lr(lr, o.lr)]
        if same:
            failed = ": its trials failed" if not any(math.isfinite(o.value) for o in same) else ""
            blocked.append(f"lr {_lr_text(lr)} was tried already{failed} ({why})")
            continue
        if len(tried) >= max_lrs:
            return BracketStep("done", None, f"budget spent: {len(tried)} of {max_lrs} lrs tried ({why})")
        return BracketStep(kind, lr, why)
    return BracketStep("done", None, "; ".join([resolved, *blocked] if resolved else blocked) or "nothing to add")


# --- from stored trials --------------------------------------------------------------------------------------


def _get(record: Any, key: str) -> Any:
    return record.get(key) if isinstance(record, Mapping) else getattr(record, key, None)


def _label(record: Any) -> str:
    label = _get(record, "label")
    return label if isinstance(label, str) and label else str(_get(record, "optimizer"))


def outcomes(analysis: SweepAnalysis, task: str, label: str) -> tuple[list[LrOutcome], float]:
    """The tried lrs of (task, label) as :class:`LrOutcome` (oriented), and the task's chance level (oriented),
    from the analysis of the sweep's trials."""
    summary = analysis.summary(task, label)
    sign = 1.0 if summary.lower_is_better else -1.0
    points = [
        LrOutcome(lr=p.lr, value=sign * p.mean if p.seeds > 0 else math.nan, diverged=p.diverged > 0)
        for p in summary.curve
    ]
    return points, sign * summary.initial_metric


def decide(spec: SweepSpec, analysis: SweepAnalysis, task: str, label: str) -> BracketStep:
    """:func:`next_lr` of (task, label) with the spec's step, resolution and budget."""
    tried, chance = outcomes(analysis, task, label)
    return next_lr(
        tried, chance=chance, step=spec.bracket_step(), resolution=spec.bracket_resolution, max_lrs=spec.bracket_max_lrs
    )


@dataclass(frozen=True)
class BracketRound:
    """The lrs one round added to a (task, optimiser) (round 0: the coarse grid)."""

    round: int
    lrs: tuple[float, ...]


@dataclass(frozen=True)
class BracketSummary:
    """One (task, optimiser) of a bracket sweep: its rounds, what it used and where it stands."""

    task: str
    label: str
    rounds: tuple[BracketRound, ...]
    lrs_used: int
    trials_used: int
    max_lrs: int
    best_lr: float  # the analysis' eta_star (NaN: no lr with evidence)
    window: tuple[float, float]  # the tried lrs either side of the best (the bracket), NaN where there is none
    state: str  # "running", or why it stopped (:class:`BracketStep` reason)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def bracket_summaries(
    spec: SweepSpec, trials: Iterable[Any] | Any, analysis: SweepAnalysis | None = None, *, sweep_over: bool = True
) -> tuple[BracketSummary, ...]:
    """Per (task, optimiser) of a bracket sweep, in spec order: the lrs each round added, the budget used, the best
    lr, its bracket and where the bracket stands: ``running`` while it has unfinished trials or (``sweep_over``
    False) a next lr to add; else why it stopped. ``trials``: records or a DataFrame with ``task``, ``label``,
    ``lr``, ``phase`` and ``status`` (and what :func:`~nero_study.study.analysis.analyze_sweep` needs)."""
    records = trials.to_dict("records") if hasattr(trials, "to_dict") and hasattr(trials, "columns") else list(trials)
    if analysis is None:
        analysis = analyze_sweep(records, protocol="bracket")
    have = {(s.task, s.label) for s in analysis.per_optimizer}
    summaries = []
    for task in spec.tasks:
        for label in spec.labels:
            rows = [r for r in records if _get(r, "task") == task and _label(r) == label]
            if not rows:
                continue
            by_round: dict[int, list[float]] = {}
            for row in rows:
                index = bracket_round(_get(row, "phase"))
                if index is None:
                    continue
                lrs = by_round.setdefault(index, [])
                if not any(same_lr(float(_get(row, "lr")), lr) for lr in lrs):
                    lrs.append(float(_get(row, "lr")))
            rounds = tuple(BracketRound(index, tuple(sorted(lrs))) for index, lrs in sorted(by_round.items()))
            unfinished = any(_get(r, "status") in ("pending", "running") for r in rows)
            best_lr, window, state = math.nan, (math.nan, math.nan), "running"
            if (task, label) in have:
                summary = analysis.summary(task, label)
                best_lr = summary.eta_star
                ran = sorted(p.lr for p in summary.curve if p.seeds > 0)
                if math.isfinite(best_lr):
                    below = [lr for lr in ran if lr < best_lr and not same_lr(lr, best_lr)]
                    above = [lr for lr in ran if lr > best_lr and not same_lr(lr, best_lr)]
                    window = (below[-1] if below else math.nan, above[0] if above else math.nan)
                if not unfinished:
                    step = decide(spec, analysis, task, label)
                    if step.lr is None:
                        state = step.reason
                    elif sweep_over:
                        state = f"stopped before it could add lr {_lr_text(step.lr)} ({step.reason})"
            summaries.append(
                BracketSummary(
                    task=task,
                    label=label,
                    rounds=rounds,
                    lrs_used=sum(len(r.lrs) for r in rounds),
                    trials_used=sum(1 for r in rows if _get(r, "status") not in ("pending", "running", "cancelled")),
                    max_lrs=spec.bracket_max_lrs,
                    best_lr=best_lr,
                    window=window,
                    state=state,
                )
            )
    return tuple(summaries)


def stored_bracket_summaries(
    spec_data: Mapping[str, Any], trials: Any, analysis: SweepAnalysis | None = None, *, sweep_over: bool = True
) -> tuple[BracketSummary, ...]:
    """:func:`bracket_summaries` of a stored sweep (its spec as the store keeps it); empty for a sweep of another
    protocol, or one whose stored spec no longer validates (its trials still show everywhere else)."""
    from pydantic import ValidationError

    if spec_data.get("protocol") != "bracket":
        return ()
    try:
        spec = SweepSpec.from_stored(dict(spec_data))
    except (ValidationError, ValueError, TypeError, KeyError):
        return ()
    return bracket_summaries(spec, trials, analysis, sweep_over=sweep_over)


__all__ = [
    "GAP_TOLERANCE_DECADES",
    "BracketRound",
    "BracketStep",
    "BracketSummary",
    "LrOutcome",
    "bracket_summaries",
    "decide",
    "next_lr",
    "outcomes",
    "stored_bracket_summaries",
]
