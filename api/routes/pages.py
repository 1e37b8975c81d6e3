"""The HTML dashboards: ``/`` (sweeps), ``/sweeps/{id}``, ``/trials/{id}``, ``/compare?sweeps=a,b``, ``/findings``.

Routes stay thin: data is read through :mod:`nero_study.store.repo` (and
:func:`dashboards.snapshot.load_sweep_snapshot`, which only calls repo functions), and :mod:`dashboards.pages`
renders the HTML. A running sweep's page polls ``/sweeps/{id}/figures.json`` and redraws itself;
``/static/plotly.min.js`` is the file shipped inside the installed ``plotly`` package, so the pages work without
the internet. Unknown ids get a 404 HTML page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from api.cache import etag, findings_answer, finished_findings, sweep_answer
from api.deps import SessionDep
from dashboards import pages
from dashboards.snapshot import load_sweep_snapshot, sweep_list_item, sweep_version, trial_record, trial_version
from dashboards.templating import static_path
from nero_study.store import repo
from nero_study.study.findings import Filters, filter_problems, gather_findings
from nero_study.study.plan import stored_planned_trials
from nero_study.vocabulary import SWEEP_FINISHED, TRIAL_ENDED

router = APIRouter(tags=["pages"], include_in_schema=False)

MAX_COMPARED_SWEEPS = 4
MAX_SWEEPS_PAGE = 500
#: Trial ids are 32-bit integers in the store.
MAX_TRIAL_ID = 2**31 - 1
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_STATIC_CACHE = "public, max-age=3600"
_HTML = "text/html; charset=utf-8"
_JSON = "application/json"

Refresh = Annotated[
    float, Query(ge=pages.MIN_REFRESH_SECONDS, le=600.0, description="Seconds between live updates of a running page")
]


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "") or "").rstrip("/")


def _not_found(request: Request, message: str, *, status_code: int = status.HTTP_404_NOT_FOUND) -> HTMLResponse:
    title = "Not found" if status_code == status.HTTP_404_NOT_FOUND else "Bad request"
    return HTMLResponse(pages.render_not_found(message, title=title, root=_root(request)), status_code=status_code)


def _short(identifier: str) -> str:
    return identifier if len(identifier) <= 64 else identifier[:61] + "..."


def _trial_id(raw: str) -> int | None:
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_TRIAL_ID else None


# --- pages -------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def sweeps_page(
    request: Request,
    session: SessionDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_SWEEPS_PAGE)] = 50,
) -> HTMLResponse:
    """The sweeps, newest first, with their status and a progress bar; above them, the findings' headline."""
    _, found = finished_findings(request, session)
    headline = gather_findings(found).headline
    sweeps, total = repo.list_sweeps(session, offset=offset, limit=limit)
    items = [
        sweep_list_item(
            sweep,
            counts=repo.sweep_counts(session, sweep_id=sweep.id),
            planned=stored_planned_trials(sweep),
        )
        for sweep in sweeps
    ]
    html = pages.render_sweeps_page(
        items, total=total, offset=offset, limit=limit, root=_root(request), findings_headline=headline
    )
    return HTMLResponse(html)


FindingFilter = Annotated[str | None, Query(max_length=100)]


@router.get("/findings", response_class=HTMLResponse)
def findings_page(
    request: Request,
    session: SessionDep,
    budget: FindingFilter = None,
    preset: FindingFilter = None,
    task: FindingFilter = None,
) -> Response:
    """Every finished sweep's verdicts in one task x optimiser table, filtered by budget, preset and task (an
    empty choice is any). A budget or preset outside the vocabulary is a 422 page naming the valid values; a
    task no finished sweep ran gives an empty table naming those that did (as ``GET /api/findings``)."""
    filters = Filters(budget=budget or None, preset=preset or None, task=task or None)
    problems = filter_problems(filters)
    if problems:
        message = " ".join(text + "." for _, text in problems)
        return _not_found(request, message, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    root = _root(request)

    def render(found: list[Any]) -> bytes:
        return pages.render_findings_page(gather_findings(found, filters), root=root).encode("utf-8")

    params = (root, filters.budget, filters.preset, filters.task)
    return findings_answer(request, session, representation="page", params=params, render=render, media_type=_HTML)



def _figures(request: Request, snapshot: Any) -> dict[str, Any]:
    """The snapshot's figures, built once per sweep version for every page, poll and report that shows them."""
    return request.app.state.sweep_view_cache.figures_of(snapshot, pages.updated_sweep_figures)


@router.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(sweep_id: str, request: Request, session: SessionDep, refresh: Refresh = 3.0) -> Response:
    """A sweep: progress, every figure, the paper-style table and the robustness metrics (live while running).

    ``ETag`` from the sweep's version: ``304`` for ``If-None-Match`` while nothing changed.
    """
    root = _root(request)

    def render(snapshot: Any) -> bytes:
        figures_etag = etag(snapshot.id, snapshot.store_version, "figures.json", (root,))
        html = pages.render_sweep_page(
            snapshot,
            root=root,
            refresh_seconds=refresh,
            figures=_figures(request, snapshot),
            figures_etag=figures_etag,
        )
        return html.encode("utf-8")

    answer = sweep_answer(
        request, session, sweep_id=sweep_id, representation="page", params=(root, refresh), render=render,
        media_type=_HTML,
    )  # fmt: skip
    return answer or _not_found(request, f"There is no sweep {_short(sweep_id)!r}.")


@router.get("/sweeps/{sweep_id}/figures.json")
def sweep_figures_json(
    sweep_id: str,
    request: Request,
    session: SessionDep,
    version: Annotated[str | None, Query(max_length=500, description="The version the page shows")] = None,
) -> Response:
    """What a live sweep page polls: every figure, the re-rendered fragments, the counts and whether the sweep
    has finished, with an ``ETag`` from the sweep's version (``304`` for ``If-None-Match`` while nothing
    changed). Pages rendered before ETags send ``version`` instead and get ``changed: false`` while current."""
    if version is None:
        root = _root(request)

        def render(snapshot: Any) -> bytes:
            body = pages.sweep_update(snapshot, root=root, figures=_figures(request, snapshot))
            return JSONResponse(body).body

        answer = sweep_answer(
            request, session, sweep_id=sweep_id, representation="figures.json", params=(root,), render=render,
            media_type=_JSON,
        )  # fmt: skip
        if answer is None:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {_short(sweep_id)!r} not found")
        return answer
    sweep = repo.get_sweep(session, sweep_id=sweep_id)
    if sweep is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {_short(sweep_id)!r} not found")
    counts = repo.sweep_counts(session, sweep_id=sweep.id)
    current = sweep_version(sweep.status, counts)
    finished = sweep.status in SWEEP_FINISHED
    if version == current:
        body: dict[str, Any] = pages.unchanged_update(current, status=sweep.status, finished=finished)
    else:
        snapshot = load_sweep_snapshot(session, sweep_id=sweep.id)
        if snapshot is None:  # deleted in between
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {_short(sweep_id)!r} not found")
        body = pages.sweep_update(snapshot, root=_root(request))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/sweeps/{sweep_id}/report.html", response_class=HTMLResponse)
def sweep_report(sweep_id: str, request: Request, session: SessionDep) -> Response:
    """The single-file HTML report of the sweep (plotly.js inlined), as a download.

    Rendered once per sweep version; its validator is weak, as the report states when it was generated.
    """

    def render(snapshot: Any) -> bytes:
        html = pages.render_report(snapshot, generated_at=datetime.now(UTC), figures=_figures(request, snapshot))
        return html.encode("utf-8")

    answer = sweep_answer(
        request, session, sweep_id=sweep_id, representation="report.html", render=render, media_type=_HTML,
        weak=True, headers={"Content-Disposition": f'attachment; filename="nero-study-{sweep_id}.html"'},
    )  # fmt: skip
    return answer or _not_found(request, f"There is no sweep {_short(sweep_id)!r}.")


def _trial(session: Any, trial_id: int) -> tuple[dict[str, Any], list[dict[str, Any]], str | None] | None:
    found = repo.get_trial_with_curve(session, trial_id=trial_id)
    if found is None:
        return None
    trial, curve = found
    sweep = repo.get_sweep(session, sweep_id=trial.sweep_id)
    return trial_record(trial), curve, None if sweep is None else sweep.name


@router.get("/trials/{trial_id}", response_class=HTMLResponse)
def trial_page(trial_id: str, request: Request, session: SessionDep, refresh: Refresh = 3.0) -> HTMLResponse:
    """A trial: its learning curves (metric and training loss against step) and its details."""
    number = _trial_id(trial_id)
    found = None if number is None else _trial(session, number)
    if found is None:
        return _not_found(request, f"There is no trial {_short(trial_id)!r}.")
    trial, curve, sweep_name = found
    html = pages.render_trial_page(trial, curve, sweep_name=sweep_name, root=_root(request), refresh_seconds=refresh)
    return HTMLResponse(html)


@router.get("/trials/{trial_id}/figures.json")
def trial_figures_json(
    trial_id: str,
    request: Request,
    session: SessionDep,
    version: Annotated[str | None, Query(max_length=500)] = None,
) -> JSONResponse:
    """What a live trial page polls (see :func:`sweep_figures_json`)."""
    number = _trial_id(trial_id)
    found = None if number is None else _trial(session, number)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Trial {_short(trial_id)!r} not found")
    trial, curve, sweep_name = found
    current = trial_version(trial, curve)
    finished = trial.get("status") in TRIAL_ENDED
    if version == current:
        body: dict[str, Any] = pages.unchanged_update(current, status=str(trial.get("status")), finished=finished)
    else:
        body = pages.trial_update(trial, curve, sweep_name=sweep_name, root=_root(request))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    session: SessionDep,
    sweeps: Annotated[str, Query(max_length=1000, description="Comma-separated sweep ids")] = "",
) -> HTMLResponse:
    """Two (up to four) sweeps side by side: lr-sensitivity figures and tables."""
    ids = list(dict.fromkeys(part.strip() for part in sweeps.split(",") if part.strip()))
    if not 2 <= len(ids) <= MAX_COMPARED_SWEEPS:
        message = (
            f"Give 2 to {MAX_COMPARED_SWEEPS} sweep ids to compare, e.g. /compare?sweeps=ID1,ID2 (got {len(ids)})."
        )
        return _not_found(request, message, status_code=status.HTTP_400_BAD_REQUEST)
    snapshots = []
    for sweep_id in ids:
        snapshot = load_sweep_snapshot(session, sweep_id=sweep_id, with_curves=False)
        if snapshot is None:
            return _not_found(request, f"There is no sweep {_short(sweep_id)!r}.")
        snapshots.append(snapshot)
    return HTMLResponse(pages.render_compare_page(snapshots, root=_root(request)))


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """plotly.min.js (from the installed plotly package) and the dashboards' own CSS and JavaScript."""
    path = static_path(name)
    if path is None or not path.is_file():
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"No static file {_short(name)!r}")
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": _STATIC_CACHE},
    )
