"""Findings across sweeps against hand-made sweeps whose right answer is known.

Sweep A, ``verdict`` (smoke budget, paper preset): the hand-made sweep of tests/study/test_study_verdict.py on
digits-mlp without sgd's lr 1 (tests/dashboards/test_pages.py ``verdict_outcomes``): nero and lamb win out of
the box; adam is behind (regret 0.25); sgd is behind (regret 0.1) with its best lr 0.1 at the top of its grid.

Sweep B, ``library`` (proxy budget, library preset), seeds 0, 1, 2, lrs 1e-4 .. 0.1 by decades:

  digits-mlp (test error, chance 0.9):
    nero (default 0.01): 1e-4 -> 0.5 x3; 1e-3 -> 0.101, 0.100, 0.102 (its best); 1e-2 -> 0.30, 0.31, 0.29;
                         1e-1 -> 0.6 x3.
    adam (default 1e-3): 1e-4 -> 0.5 x3; 1e-3 -> 0.100, 0.102, 0.098 (mean 0.100, the best of the task);
                         1e-2 -> 0.3 x3; 1e-1 -> 0.6 x3.
    -> adam wins out of the box (its default is the best); nero is behind: regret (0.30 - 0.100) / (0.9 - 0.100)
       = 0.25, outside adam's 95% interval 0.100 ± 4.303 * 0.002 / sqrt(3) = ± 0.005.
  ppo-cartpole (mean return, higher is better, 10 at initialisation):
    nero: 1e-4 -> 15 x3; 1e-3 -> 60, 62, 58; 1e-2 -> 100, 102, 98 (its default and the best); 1e-1 -> 30 x3.
    adam: 1e-4 -> 20 x3; 1e-3 -> 70, 72, 68 (ootb); 1e-2 -> 90, 91, 89; 1e-1 -> 20 x3.
    -> nero wins out of the box; adam is behind: regret (100 - 70) / (100 - 10) = 1/3.

Across both (B newer): digits-mlp's nero and adam are ``mixed`` (A and B disagree), sgd ``behind``, lamb
``winner``; ppo-cartpole's nero ``winner``, adam ``behind``. Nero: winner on 1 of 2 tasks, mixed on 1.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from nero_study.study.analysis import analyze_sweep
from nero_study.study.findings import (
    Filters,
    SweepFindings,
    filter_problems,
    gather_findings,
    sweep_findings,
)
from nero_study.study.verdict import sweep_verdict
from tests.dashboards.conftest import KNOWN_OUTCOMES, KNOWN_SPEC, TASK_INFO
from tests.dashboards.test_pages import VERDICT_SPEC, verdict_outcomes

Outcome = tuple[str, str, float, int, str, float | None]
SEEDS = (0, 1, 2)


def _runs(task: str, label: str, lr: float, values: Any) -> list[Outcome]:
    values = values if isinstance(values, (list, tuple)) else [values] * len(SEEDS)
    return [(task, label, lr, seed, "succeeded", value) for seed, value in zip(SEEDS, values, strict=True)]


def library_outcomes() -> tuple[Outcome, ...]:
    """Sweep B (module docstring)."""
    table = {
        ("digits-mlp", "nero"): [(1e-4, 0.5), (1e-3, [0.101, 0.100, 0.102]), (1e-2, [0.30, 0.31, 0.29]), (0.1, 0.6)],
        ("digits-mlp", "adam"): [(1e-4, 0.5), (1e-3, [0.100, 0.102, 0.098]), (1e-2, 0.3), (0.1, 0.6)],
        ("ppo-cartpole", "nero"): [(1e-4, 15.0), (1e-3, [60.0, 62.0, 58.0]), (1e-2, [100.0, 102.0, 98.0]), (0.1, 30.0)],
        ("ppo-cartpole", "adam"): [(1e-4, 20.0), (1e-3, [70.0, 72.0, 68.0]), (1e-2, [90.0, 91.0, 89.0]), (0.1, 20.0)],
    }
    return tuple(
        run
        for (task, label), points in table.items()
        for lr, values in points
        for run in _runs(task, label, lr, values)
    )


LIBRARY_SPEC: dict[str, Any] = {
    "name": "library",
    "tasks": ["digits-mlp", "ppo-cartpole"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.0001, 0.001, 0.01, 0.1],
    "seeds": [0, 1, 2],
    "protocol": "grid",
    "budget": "proxy",
    "preset": "library",
}
A_SPEC: dict[str, Any] = {**VERDICT_SPEC, "protocol": "grid", "preset": "paper"}


def frame(outcomes: tuple[Outcome, ...], spec: dict[str, Any]) -> pd.DataFrame:
    """The outcomes as a trials frame (the columns of ``repo.trials_frame`` that the analysis reads)."""
    rows = []
    for index, (task, label, lr, seed, status, metric) in enumerate(outcomes, start=1):
        metric_name, lower, initial = TASK_INFO[task]
        rows.append(
            {
                "id": index, "task": task, "optimizer": label, "label": label, "lr": lr, "seed": seed,
                "status": status, "metric": float("nan") if metric is None else metric, "initial_metric": initial,
                "metric_name": metric_name, "lower_is_better": lower, "budget": spec.get("budget"),
                "preset": spec.get("preset", "paper"),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def findings_of(
    sweep_id: str, outcomes: tuple[Outcome, ...], spec: dict[str, Any], *, status: str = "succeeded", age: int = 0
) -> SweepFindings:
    trials = frame(outcomes, spec)
    return sweep_findings(
        sweep_id=sweep_id,
        name=spec["name"],
        status=status,
        spec=spec,
        trials=trials,
        analysis=analyze_sweep(trials),
        finished_at=NOW - timedelta(hours=age),
    )


@pytest.fixture(scope="module")
def two_sweeps() -> list[SweepFindings]:
    return [findings_of("A", verdict_outcomes(), A_SPEC, age=2), findings_of("B", library_outcomes(), LIBRARY_SPEC)]


def table(findings: Any) -> dict[tuple[str, str], tuple[str, list[tuple[str, str]]]]:
    """{(task, label): (overall, [(sweep id, status), ...])}"""
    return {(r.task, r.label): (r.overall, [(e.sweep_id, e.status) for e in r.entries]) for r in findings.rows}


def test_two_sweeps_give_one_table_with_each_sweeps_verdict(two_sweeps: list[SweepFindings]) -> None:
    findings = gather_findings(two_sweeps)
    assert table(findings) == {
        ("digits-mlp", "nero"): ("mixed", [("B", "behind"), ("A", "winner")]),
        ("digits-mlp", "adam"): ("mixed", [("B", "winner"), ("A", "behind")]),
        ("digits-mlp", "sgd"): ("behind", [("A", "behind")]),
        ("digits-mlp", "lamb"): ("winner", [("A", "winner")]),
        ("ppo-cartpole", "nero"): ("winner", [("B", "winner")]),
        ("ppo-cartpole", "adam"): ("behind", [("B", "behind")]),
    }
    assert [row.label for row in findings.rows[:4]] == ["nero", "adam", "sgd", "lamb"]  # first appearance
    assert [sweep.sweep_id for sweep in findings.sweeps] == ["B", "A"]  # newest first
    assert findings.headline == "Nero out-of-the-box winner on 1 of 2 tasks across 2 finished sweeps (mixed on 1)."
    tallies = {tally.label: (tally.tasks, tally.counts) for tally in findings.tallies}
    assert tallies["nero"] == (2, {"winner": 1, "behind": 0, "mixed": 1, "inconclusive": 0})
    assert tallies["lamb"] == (1, {"winner": 1, "behind": 0, "mixed": 0, "inconclusive": 0})
    assert findings.note is None and findings.available_tasks == ("digits-mlp", "ppo-cartpole")


def test_entries_carry_the_numbers_of_the_known_answer(two_sweeps: list[SweepFindings]) -> None:
    rows = {(r.task, r.label): r for r in gather_findings(two_sweeps).rows}
    nero_b, nero_a = rows[("digits-mlp", "nero")].entries
    assert nero_b.ootb_regret == pytest.approx((0.30 - 0.100) / (0.9 - 0.100))
    assert nero_b.best == pytest.approx(0.101) and nero_b.eta_star == 0.001 and nero_b.lr_factor == pytest.approx(0.1)
    assert (nero_b.ootb_seeds, nero_b.best_seeds) == (3, 3)
    assert (nero_b.budget, nero_b.preset, nero_b.optimizer) == ("proxy", "library", "nero")
    assert nero_a.ootb_regret == pytest.approx(0.0, abs=1e-12) and nero_a.best == pytest.approx(0.100)
    (adam_ppo,) = rows[("ppo-cartpole", "adam")].entries
    assert adam_ppo.ootb_regret == pytest.approx((100 - 70) / (100 - 10))
    assert adam_ppo.best == pytest.approx(90.0) and adam_ppo.eta_star == 0.01
    (sgd,) = rows[("digits-mlp", "sgd")].entries
    assert sgd.edge == "high" and "best lr at the edge of the grid: widen the grid" in sgd.reasons


def test_entries_are_the_sweeps_own_verdict_not_a_recomputation(two_sweeps: list[SweepFindings]) -> None:
    """Every entry is field for field the verdict of its sweep's analysis (what the sweep page shows)."""
    verdicts = {
        "A": sweep_verdict(analyze_sweep(frame(verdict_outcomes(), A_SPEC))),
        "B": sweep_verdict(analyze_sweep(frame(library_outcomes(), LIBRARY_SPEC))),
    }
    seen = 0
    for row in gather_findings(two_sweeps).rows:
        for entry in row.entries:
            (task,) = [t for t in verdicts[entry.sweep_id].tasks if t.task == row.task]
            (verdict,) = [o for o in task.optimizers if o.label == row.label]
            assert (entry.status, entry.reasons, entry.edge) == (verdict.status, verdict.reasons, verdict.edge)
            assert (entry.ootb_regret, entry.best, entry.eta_star) == (
                verdict.ootb_regret,
                verdict.best,
                verdict.eta_star,
            )
            seen += 1
    assert seen == 8


@pytest.mark.parametrize(
    ("filters", "sweeps", "headline"),
    [
        (Filters(budget="smoke"), ["A"], "Nero out-of-the-box winner on 1 of 1 task across 1 finished sweep."),
        (
            Filters(preset="library"),
            ["B"],
            "Nero out-of-the-box winner on 1 of 2 tasks across 1 finished sweep (behind on 1).",
        ),
        (Filters(task="ppo-cartpole"), ["B"], "Nero out-of-the-box winner on 1 of 1 task across 1 finished sweep."),
        (Filters(budget="smoke", preset="library"), [], "No finished sweep matches budget smoke, preset library."),
    ],
)
def test_filters_choose_the_sweeps(two_sweeps: list[SweepFindings], filters: Filters, sweeps, headline) -> None:
    findings = gather_findings(two_sweeps, filters)
    assert [sweep.sweep_id for sweep in findings.sweeps] == sweeps
    assert findings.headline == headline
    assert all(entry.sweep_id in sweeps for row in findings.rows for entry in row.entries)
    if filters.task is not None:
        assert {row.task for row in findings.rows} == {filters.task}
    if not sweeps:
        assert findings.rows == () and findings.note == "No finished sweep matches budget smoke, preset library."


def test_an_unknown_task_gives_an_empty_table_naming_the_tasks_with_findings(two_sweeps) -> None:
    findings = gather_findings(two_sweeps, Filters(task="digit-mlp"))
    assert findings.rows == () and findings.sweeps == ()
    assert findings.note == "No finished sweep matches task digit-mlp. Tasks with findings: digits-mlp, ppo-cartpole."


def test_a_budget_or_preset_outside_the_vocabulary_is_named_with_the_valid_values() -> None:
    assert filter_problems(Filters(budget="smoke", preset="paper", task="anything")) == []
    assert filter_problems(Filters(budget="tiny", preset="mine")) == [
        ("budget", "Unknown budget 'tiny'; valid: smoke, proxy, paper"),
        ("preset", "Unknown preset 'mine'; valid: paper, library"),
    ]


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled"])
def test_only_sweeps_that_ran_to_their_end_are_read(two_sweeps: list[SweepFindings], status: str) -> None:
    other = findings_of("C", library_outcomes(), {**LIBRARY_SPEC, "name": status}, status=status, age=-1)
    findings = gather_findings([*two_sweeps, other])
    assert [sweep.sweep_id for sweep in findings.sweeps] == ["B", "A"]
    assert table(findings) == table(gather_findings(two_sweeps))


def test_a_sweep_with_failed_trials_is_read_with_its_caveat() -> None:
    """The dashboards' known sweep: adam's lr 1 failed at both seeds, the sweep ended ``trials_failed``."""
    known = findings_of("K", KNOWN_OUTCOMES, KNOWN_SPEC, status="trials_failed")
    findings = gather_findings([known])
    assert [sweep.sweep_id for sweep in findings.sweeps] == ["K"]
    assert known.caveats == ("2 failed trials left out of its metrics",)
    rows = {(r.task, r.label): r for r in findings.rows}
    (adam,) = rows[("digits-mlp", "adam")].entries
    assert adam.failed == 2 and "2 failed trials left out" in adam.reasons and adam.status == "inconclusive"
    assert all(entry.caveats == known.caveats for row in findings.rows for entry in row.entries)


def test_no_finished_sweep() -> None:
    findings = gather_findings([])
    assert findings.rows == () and findings.headline == "No finished sweeps to draw findings from yet."
    assert findings.note == "No sweep has finished yet."


def test_headline_when_nero_did_not_run() -> None:
    without_nero = tuple(outcome for outcome in verdict_outcomes() if outcome[1] != "nero")
    findings = gather_findings([findings_of("L", without_nero, A_SPEC)])
    assert findings.rows and all(row.label != "nero" for row in findings.rows)
    assert findings.headline == "Nero did not run in the 1 finished sweep shown."


def test_budget_and_preset_of_an_imported_sweep_come_from_its_trials() -> None:
    """An imported sweep's spec has no budget or preset; its trials say ``paper``/``paper``."""
    spec = {"name": "imported", "imported": True, "tasks": ["digits-mlp"], "optimizers": ["nero", "adam"]}
    trials = frame(library_outcomes(), {"budget": "paper", "preset": "paper"})
    found = sweep_findings(
        sweep_id="I", name="imported", status="succeeded", spec=spec, trials=trials, analysis=analyze_sweep(trials)
    )
    assert (found.budget, found.preset) == ("paper", "paper")
    assert [sweep.sweep_id for sweep in gather_findings([found], Filters(budget="paper")).sweeps] == ["I"]
