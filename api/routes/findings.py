"""``/api/findings``: every finished sweep's per-task verdicts in one task x optimiser table, filterable.

The table is gathered by :mod:`nero_study.study.findings` from each sweep's verdict (the one its page shows),
answered from the set of (sweep id, version) pairs of the finished sweeps (:func:`api.cache.findings_answer`).
Budget and preset are closed sets (a value outside them is a 422 naming the valid ones); a task is open
(imported sweeps bring their own task names): one that no finished sweep ran gives an empty table whose
``note`` names the tasks that have findings.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from api.cache import findings_answer
from api.deps import SessionDep
from api.errors import ERROR_RESPONSES
from api.schemas import (
    FindingEntryPublic,
    FindingFiltersPublic,
    FindingLinks,
    FindingRowPublic,
    FindingsPublic,
    FindingSweepPublic,
    FindingTallyPublic,
)
from nero_study.study.findings import Filters, Findings, gather_findings
from nero_study.vocabulary import Budget, Preset

router = APIRouter(prefix="/api/findings", tags=["findings"], responses=ERROR_RESPONSES)

BudgetFilter = Annotated[Budget | None, Query(description="Only sweeps run at this budget")]
PresetFilter = Annotated[Preset | None, Query(description="Only sweeps run with this preset")]
TaskFilter = Annotated[
    str | None,
    Query(min_length=1, max_length=100, description="Only this task (an empty table when no finished sweep ran it)"),
]


def links(sweep_id: str, root: str = "") -> FindingLinks:
    """Where a finding of sweep ``sweep_id`` comes from (paths under the app's ``root``)."""
    api = f"{root}/api/sweeps/{sweep_id}"
    return FindingLinks(page=f"{root}/sweeps/{sweep_id}", sweep=api, analysis=f"{api}/analysis")


def findings_public(findings: Findings, *, root: str = "") -> FindingsPublic:
    """The API's view of a findings table."""
    rows = []
    for row in findings.rows:
        entries = [FindingEntryPublic(**asdict(entry), links=links(entry.sweep_id, root)) for entry in row.entries]
        rows.append(
            FindingRowPublic(
                task=row.task,
                label=row.label,
                metric_name=row.metric_name,
                lower_is_better=row.lower_is_better,
                overall=row.overall,
                winner=row.count("winner"),
                behind=row.count("behind"),
                inconclusive=row.count("inconclusive"),
                entries=entries,
            )
        )
    sweeps = [
        FindingSweepPublic(
            id=sweep.sweep_id,
            name=sweep.name,
            status=sweep.status,
            budget=sweep.budget,
            preset=sweep.preset,
            protocol=sweep.protocol,
            seeds=list(sweep.seeds),
            tasks=list(sweep.tasks),
            finished_at=sweep.finished_at,
            failed_trials=sweep.failed_trials,
            caveats=list(sweep.caveats),
            links=links(sweep.sweep_id, root),
        )
        for sweep in findings.sweeps
    ]
    tallies = [FindingTallyPublic(label=tally.label, tasks=tally.tasks, **tally.counts) for tally in findings.tallies]
    return FindingsPublic(
        headline=findings.headline,
        filters=FindingFiltersPublic(**asdict(findings.filters)),
        sweeps=sweeps,
        rows=rows,
        tallies=tallies,
        available_tasks=list(findings.available_tasks),
        note=findings.note,
    )


@router.get("", response_model=FindingsPublic, summary="Findings across finished sweeps")
def read_findings(
    request: Request,
    session: SessionDep,
    budget: BudgetFilter = None,
    preset: PresetFilter = None,
    task: TaskFilter = None,
) -> Response:
    """Every finished sweep's verdict per task and optimiser: out-of-the-box regret, tuned best (metric and lr),
    seeds and links to the sweeps, one row per (task, optimiser) with its overall answer, per-optimiser tallies
    and the headline (the plain Nero variant's record). ``ETag`` from the finished sweeps' versions: ``304`` for
    ``If-None-Match`` while none changed."""
    filters = Filters(budget=budget, preset=preset, task=task)

    def render(found: list[Any]) -> bytes:
        public = findings_public(gather_findings(found, filters))
        return JSONResponse(public.model_dump(mode="json")).body

    return findings_answer(
        request,
        session,
        representation="api",
        params=(budget, preset, task),
        render=render,
        media_type="application/json",
    )
