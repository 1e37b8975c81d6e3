"""The answer a sweep gives, per task: which optimisers work out of the box, and what the others need.

Built only from a :class:`~nero_study.study.analysis.SweepAnalysis` (no new statistics): the seed intervals,
the paired comparisons, the failed-trial counts and the binomial standard errors it already holds.

Per (task, optimiser), the *reference* is the task's best tuned result (``TaskSummary.best_all``, reached by
``best_label`` at its ``eta_star``), and ``ootb`` is the optimiser's mean at its default lr. The status:

- ``winner`` (an out-of-the-box winner): the default lr is within noise of the reference. When the default lr
  *is* the optimiser's best lr, the analysis' paired comparison decides (the best itself, or its 95% paired
  t-interval includes 0: ``SweepAnalysis.is_best``). Otherwise ``ootb`` must lie inside the reference's 95%
  t-interval over seeds (``best_ci`` of ``best_label``), on the worse side's bound.
- ``behind``: the same evidence says the default lr is worse than the reference.
- ``inconclusive``: the claim is withheld, and ``reasons`` says why. Any of: no optimiser beat chance on the
  task (the best tuned result is no better than the metric at initialisation); the default lr was not run; this
  optimiser has failed trials (left out of the metrics, so a missing lr may hide the answer); fewer than two
  seeds at the default lr or at the reference (no interval; under the ``paper`` protocol a default lr that is
  not the chosen lr ran one seed); with one paired seed, no paired comparison; a ``behind`` whose difference
  from the reference is within one binomial standard error of the test set (error-rate metrics on a known
  test-set size: below the test set's resolution). A ``winner`` is further withheld when the reference is
  itself uncertain: its best lr is at the edge of its grid (the best may lie beyond it) or its optimiser has
  failed trials; and when the interval it rests on reaches chance (``m0``): such an interval (two seeds of a
  noisy task, t = 12.7) would call a run at chance "within noise" too, so it cannot tell a winner.

Grid edges (``grid``, ``paper`` and ``bracket`` protocols; not ``tpe``, whose lrs are samples): an optimiser
whose best lr is the lowest or highest lr it ran is flagged ``edge`` ("low"/"high"), with the advice
:data:`EDGE_ADVICE` (under ``bracket`` only when it stopped before trying past that edge: its budget,
``bracket_max_lrs``, ran out, the lr past it failed, or the best lr had a diverged seed). Its tuned result is
then a bound, not a best, so the verdict does not say which lr it "needs", only that the grid should be widened.

Numbers per optimiser: ``ootb_regret`` (the analysis' normalised regret at the default lr, 0 = best of all, 1 =
chance), ``tuned_gap`` (the same normalised regret of its tuned best: 0 for the best, how far tuning still
leaves it behind otherwise), and ``lr_factor`` = best lr / default lr. The task's ``sentence`` joins one
clause per optimiser, built from these numbers and statuses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from nero_study.formatting import format_number
from nero_study.json_safe import json_safe
from nero_study.study.analysis import OptimizerSummary, SweepAnalysis, TaskSummary, normalised_regret
from nero_study.vocabulary import same_lr

VerdictStatus = Literal["winner", "behind", "inconclusive"]
Edge = Literal["low", "high", "only"]

EDGE_ADVICE = "best lr at the edge of the grid: widen the grid"
NOTHING_LEARNT = "no optimiser beat chance on this task"
TOO_WIDE = "the 95% interval reaches chance: too wide to tell a winner from a failure, more seeds needed"
GRID_PROTOCOLS: tuple[str, ...] = ("grid", "paper", "bracket")


@dataclass(frozen=True)
class OptimizerVerdict:
    """One optimiser on one task: out of the box against the task's best tuned result (module docstring)."""

    task: str
    label: str
    status: VerdictStatus
    default_lr: float
    ootb: float  # mean at the default lr, in the task's orientation (NaN: not run)
    ootb_seeds: int
    ootb_regret: float  # normalised: 0 = the best tuned result of the task, 1 = chance
    best: float  # this optimiser's tuned best
    eta_star: float
    best_seeds: int
    tuned_gap: float  # normalised regret of the tuned best: 0 for the task's best
    lr_factor: float  # eta_star / default_lr
    tuned_matches: bool  # the tuned best is the task's best or not distinguishable from it (paired over seeds)
    edge: Edge | None  # best lr at the low/high edge of its grid (grid protocols), or the only lr run
    failed: int
    reasons: tuple[str, ...]  # why the claim is withheld (status "inconclusive"), or caveats of a claim
    clause: str  # the plain-language part of the task's sentence about this optimiser

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class TaskVerdict:
    """The verdict of one task: its out-of-the-box winners, each optimiser's verdict and one sentence."""

    task: str
    metric_name: str
    lower_is_better: bool
    best_label: str | None
    best_all: float
    best_lr: float
    winners: tuple[str, ...]
    optimizers: tuple[OptimizerVerdict, ...]
    reasons: tuple[str, ...]  # what makes the reference (the best tuned result) uncertain
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe({**asdict(self), "optimizers": [o.to_dict() for o in self.optimizers]})


@dataclass(frozen=True)
class SweepVerdict:
    tasks: tuple[TaskVerdict, ...]

    @property
    def edges(self) -> tuple[OptimizerVerdict, ...]:
        """Every (task, optimiser) whose best lr sits at an edge of its grid."""
        return tuple(o for t in self.tasks for o in t.optimizers if o.edge is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": [t.to_dict() for t in self.tasks], "edge_advice": EDGE_ADVICE}


def grid_edge(summary: OptimizerSummary) -> Edge | None:
    """``low``/``high`` when the best lr is the lowest/highest lr the optimiser ran (``only`` when it ran one
    lr), under a grid protocol; ``None`` inside the grid or under TPE."""
    if summary.protocol not in GRID_PROTOCOLS or not math.isfinite(summary.eta_star):
        return None
    lrs = sorted(p.lr for p in summary.curve if p.seeds > 0)
    if not lrs:
        return None
    if len(lrs) == 1:
        return "only"
    if same_lr(summary.eta_star, lrs[0]):
        return "low"
    if same_lr(summary.eta_star, lrs[-1]):
        return "high"
    return None


def _oriented(value: float, lower_is_better: bool) -> float:
    return value if lower_is_better else -value


def _ootb_seeds(summary: OptimizerSummary) -> int:
    point = next((p for p in summary.curve if same_lr(p.lr, summary.default_lr)), None)
    return 0 if point is None else point.seeds


def _lr(value: float) -> str:
    return format_number(value, "g")


def _factor_text(factor: float) -> str:
    if not math.isfinite(factor) or factor <= 0:
        return ""
    if factor >= 1:
        return f"{format_number(factor, '.3g')}x its default"
    return f"{format_number(1 / factor, '.3g')}x below its default"


def _optimizer_verdict(analysis: SweepAnalysis, task: TaskSummary, summary: OptimizerSummary) -> OptimizerVerdict:
    lower = task.lower_is_better
    reference = analysis.summary(task.task, task.best_label) if task.best_label is not None else summary
    m0 = _oriented(task.initial_metric, lower)
    best_all = _oriented(task.best_all, lower)
    ootb = _oriented(summary.ootb, lower)
    ootb_seeds = _ootb_seeds(summary)
    default_is_best_lr = math.isfinite(summary.default_lr) and same_lr(summary.default_lr, summary.eta_star)
    tuned_matches = analysis.is_best(task.task, summary.label)
    edge = grid_edge(summary)
    tuned_gap = normalised_regret(min(_oriented(summary.best, lower), m0), m0, best_all)
    factor = summary.eta_star / summary.default_lr if summary.default_lr > 0 else math.nan

    reasons: list[str] = []
    status: VerdictStatus
    if not best_all < m0:  # also NaN: no chance level to compare with
        reasons.append(NOTHING_LEARNT)
    if math.isnan(ootb):
        reasons.append("its default lr was not run")
    if summary.failed:
        reasons.append(f"{summary.failed} failed trial{'s' if summary.failed != 1 else ''} left out")
    if default_is_best_lr:
        comparison = analysis.comparison(task.task, summary.label)
        if comparison is not None and comparison.distinguishable is None:
            reasons.append(f"{comparison.seeds} paired seed{'s' if comparison.seeds != 1 else ''}: no interval")
        elif comparison is None and summary.best_seeds < 2:  # the best itself: nothing to tell it apart from
            reasons.append(f"{summary.best_seeds} seed: no interval")
    else:
        if 0 < ootb_seeds < 2:
            reasons.append("1 seed at its default lr: no interval")
        if reference.best_seeds < 2 or math.isnan(reference.best_ci[0]):
            reasons.append(f"{reference.best_seeds} seed at the best tuned result: no interval")
    if reasons:
        status = "inconclusive"
    else:
        if default_is_best_lr:
            within = tuned_matches
        else:
            worse_bound = reference.best_ci[1] if lower else -reference.best_ci[0]
            within = ootb <= worse_bound
        status = "winner" if within else "behind"
        se = reference.binomial_se
        if status == "behind" and math.isfinite(se) and abs(ootb - best_all) <= se:
            status = "inconclusive"
            reasons.append(
                f"the difference {format_number(abs(ootb - best_all), '.2g')} is within the test set's binomial "
                f"SE {format_number(se, '.2g')}"
            )
    if status == "winner" and summary.label != task.best_label:
        worse_end = _worse_end(analysis, task, summary, reference, default_is_best_lr)
        if not worse_end < m0:
            status = "inconclusive"
            reasons.append(TOO_WIDE)
    task_reasons = _reference_reasons(task, reference)
    if status == "winner" and task_reasons and summary.label != task.best_label:
        status = "inconclusive"
        reasons.extend(task_reasons)
    if edge is not None:
        reasons.append(EDGE_ADVICE if edge != "only" else "only one lr run: no grid to tell the best from")

    clause = _clause(summary, status, reasons, tuned_matches, tuned_gap, factor, edge, task)
    return OptimizerVerdict(
        task=task.task,
        label=summary.label,
        status=status,
        default_lr=summary.default_lr,
        ootb=summary.ootb,
        ootb_seeds=ootb_seeds,
        ootb_regret=summary.ootb_regret,
        best=summary.best,
        eta_star=summary.eta_star,
        best_seeds=summary.best_seeds,
        tuned_gap=tuned_gap,
        lr_factor=factor,
        tuned_matches=tuned_matches,
        edge=edge,
        failed=summary.failed,
        reasons=tuple(reasons),
        clause=clause,
    )


def _worse_end(
    analysis: SweepAnalysis,
    task: TaskSummary,
    summary: OptimizerSummary,
    reference: OptimizerSummary,
    default_is_best_lr: bool,
) -> float:
    """The worse end (oriented: lower is better) of the interval a ``winner`` claim rests on: best_all plus the
    paired difference's upper bound, or the reference's t-interval bound."""
    lower = task.lower_is_better
    if default_is_best_lr:
        comparison = analysis.comparison(task.task, summary.label)
        high = comparison.ci_high if comparison is not None else math.nan
        return _oriented(task.best_all, lower) + high
    return reference.best_ci[1] if lower else -reference.best_ci[0]


def _reference_reasons(task: TaskSummary, reference: OptimizerSummary) -> list[str]:
    reasons = []
    if grid_edge(reference) in ("low", "high"):
        reasons.append(f"the best tuned result ({reference.label}) has its best lr at the edge of its grid")
    if reference.failed:
        reasons.append(f"the best tuned result ({reference.label}) has failed trials")
    return reasons


def _clause(
    summary: OptimizerSummary,
    status: VerdictStatus,
    reasons: list[str],
    tuned_matches: bool,
    tuned_gap: float,
    factor: float,
    edge: Edge | None,
    task: TaskSummary,
) -> str:
    name = summary.label
    default = _lr(summary.default_lr)
    if status == "inconclusive":
        withheld = [r for r in reasons if r != EDGE_ADVICE]
        text = f"{name} at its default lr ({default}): too little evidence to say ({', '.join(withheld)})"
    elif status == "winner":
        if summary.label == task.best_label:
            text = f"{name} at its default lr ({default}) gives the best tuned result"
        else:
            text = f"{name} at its default lr ({default}) is within noise of the best tuned result"
        return text + ("; " + EDGE_ADVICE if edge in ("low", "high") else "")
    else:
        regret = format_number(summary.ootb_regret, ".2g")
        text = f"{name} at its default lr ({default}) is behind (regret {regret})"
    if edge in ("low", "high"):
        return f"{text}; its best lr {_lr(summary.eta_star)} is at the {edge} edge of the grid: widen the grid"
    if edge == "only":
        return text
    if status == "behind":
        if tuned_matches:
            return f"{text}; it needs lr {_lr(summary.eta_star)}, {_factor_text(factor)}, to match"
        gap = format_number(tuned_gap, ".2g")
        if same_lr(summary.eta_star, summary.default_lr):
            return f"{text}; its default lr is already its best, still behind (tuned gap {gap})"
        return f"{text}; tuned (lr {_lr(summary.eta_star)}) it is still behind (tuned gap {gap})"
    return text


def sweep_verdict(analysis: SweepAnalysis) -> SweepVerdict:
    """Per task: the out-of-the-box winners, each optimiser's verdict and one sentence (module docstring)."""
    verdicts = []
    for task in analysis.tasks:
        summaries = [s for s in analysis.per_optimizer if s.task == task.task]
        if not summaries:
            continue
        optimizers = tuple(_optimizer_verdict(analysis, task, s) for s in summaries)
        reference = analysis.summary(task.task, task.best_label) if task.best_label is not None else summaries[0]
        winners = tuple(o.label for o in optimizers if o.status == "winner")
        reasons = tuple(_reference_reasons(task, reference))
        sentence = "; ".join(o.clause for o in optimizers) + "."
        verdicts.append(
            TaskVerdict(
                task=task.task,
                metric_name=task.metric_name,
                lower_is_better=task.lower_is_better,
                best_label=task.best_label,
                best_all=task.best_all,
                best_lr=reference.eta_star,
                winners=winners,
                optimizers=optimizers,
                reasons=reasons,
                sentence=sentence[0].upper() + sentence[1:],
            )
        )
    return SweepVerdict(tasks=tuple(verdicts))


__all__ = ["EDGE_ADVICE", "OptimizerVerdict", "SweepVerdict", "TaskVerdict", "grid_edge", "sweep_verdict"]
