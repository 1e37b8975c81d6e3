"""``/api/sweeps``: submit (queued for a worker), list, read, cancel, list trials, analyse and export a sweep.

Routes are thin: data access goes through :mod:`nero_study.store.repo`; the sweep spec is validated by
``SweepSpec`` itself (its messages name the field and the valid values) against this service's trial limit.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.body import SWEEP_BODY_OPENAPI, read_sweep_spec
from api.cache import sweep_answer
from api.deps import SessionDep, TokenDep, in_session
from api.errors import ERROR_RESPONSES
from api.schemas import (
    ErrorPublic,
    SweepCreate,
    SweepLinks,
    SweepPublic,
    SweepsPublic,
    TrialsPublic,
)
from nero_study.json_safe import MAX_SHOWN_DEPTH, json_safe
from nero_study.store import repo
from nero_study.store.models import Sweep
from nero_study.study.plan import stored_planned_trials
from nero_study.study.queue import queue_sweep
from nero_study.vocabulary import SWEEP_FINISHED, SweepStatus, TrialStatus

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"], responses=ERROR_RESPONSES)

#: Largest page a listing returns, and the largest offset accepted (keeps integers inside the databases').
MAX_SWEEPS_PAGE = 500
MAX_TRIALS_PAGE = 1000
MAX_OFFSET = 1_000_000_000

SweepId = Annotated[
    str,
    Path(description="The sweep's id (32 hex characters)", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$"),
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        description="Send the same key again to get the same sweep back (200) instead of a new one (201)",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
    ),
]

_UNAUTHORIZED = {401: {"model": ErrorPublic, "description": "Missing or invalid bearer token"}}
_NOT_FOUND = {404: {"model": ErrorPublic, "description": "No sweep with this id"}}

# --- presenting ---------------------------------------------------------------------------------------


def sweep_public(sweep: Sweep, *, counts: dict[str, int], planned_trials: int | None) -> SweepPublic:
    """The API's view of a stored sweep."""
    base = f"/api/sweeps/{sweep.id}"
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        # Bounded: a stored spec of any depth (one stored before specs were bounded) never breaks a listing.
        spec=json_safe(dict(sweep.spec or {}), max_depth=MAX_SHOWN_DEPTH),
        counts=counts,
        trials_total=sum(counts.values()),
        planned_trials=planned_trials,
        cancel_requested=bool(sweep.cancel_requested),
        created_at=sweep.created_at,
        updated_at=sweep.updated_at,
        started_at=sweep.started_at,
        finished_at=sweep.finished_at,
        error=sweep.error,
        execution=sweep.execution,
        attempts=sweep.attempts or 0,
        busy_slot_seconds=sweep.busy_slot_s,
        slot_seconds=sweep.slot_s,
        slot_utilisation=sweep.slot_utilisation,
        links=SweepLinks(
            self=base,
            trials=f"{base}/trials",
            analysis=f"{base}/analysis",
            export_csv=f"{base}/export.csv",
            export_parquet=f"{base}/export.parquet",
        ),
    )


def _present(session: Session, sweep: Sweep) -> SweepPublic:
    counts = repo.sweep_counts(session, sweep_id=sweep.id)
    return sweep_public(sweep, counts=counts, planned_trials=stored_planned_trials(sweep))


def _get_or_404(session: Session, sweep_id: str) -> Sweep:
    sweep = repo.get_sweep(session, sweep_id=sweep_id)
    if sweep is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {sweep_id[:64]!r} not found")
    return sweep


# --- routes ------------------------------------------------------------------------------------------


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    summary="Submit a sweep (queued for a worker)",
    responses={
        200: {"model": SweepPublic, "description": "The sweep created earlier with this Idempotency-Key"},
        **_UNAUTHORIZED,
        409: {"model": ErrorPublic, "description": "The Idempotency-Key was used with a different spec"},
        413: {"model": ErrorPublic, "description": "The spec is larger than max_spec_bytes"},
    },
    openapi_extra=SWEEP_BODY_OPENAPI,
)
def create_sweep(
    principal: TokenDep,
    spec: Annotated[SweepCreate, Depends(read_sweep_spec)],
    request: Request,
    response: Response,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepPublic:
    """Validate the spec, check its planned trial count against the limit, and queue it.

    The API never trains: a worker claims the queued sweep (under ``nero-study serve`` its workers are woken
    at once; others find it at their next poll). With an ``Idempotency-Key`` header, sending the same request
    again returns the sweep already created, with status 200.
    """
    try:
        sweep, created = queue_sweep(session, spec, idempotency_key=idempotency_key)
    except repo.IdempotencyKeyReused as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if created:
        logger.info("sweep %s queued by %s", sweep.id, principal.name)
        wake_workers = getattr(request.app.state, "wake_workers", None)
        if wake_workers is not None:
            wake_workers()
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/sweeps/{sweep.id}"
    return _present(session, sweep)


#: The largest results file ``POST /api/sweeps/import`` reads, in bytes.
MAX_IMPORT_BYTES = 5_000_000


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    response_model=SweepPublic,
    summary="Import results computed elsewhere as a finished sweep",
    responses={
        **_UNAUTHORIZED,
        413: {"model": ErrorPublic, "description": "The file is larger than MAX_IMPORT_BYTES"},
        422: {"model": ErrorPublic, "description": "Bad rows, each named by row and column; nothing stored"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A results CSV (one row per trial; columns in nero_study.study.importing).",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
async def import_sweep(
    principal: TokenDep,
    request: Request,
    response: Response,
    name: Annotated[str, Query(min_length=1, max_length=200, description="The sweep's name")] = "imported",
) -> SweepPublic:
    """Store trials computed elsewhere (e.g. a paper's published table) as a finished sweep, so the same
    metrics, report and pages apply and ``/compare`` can set it beside a sweep run here. A file with any bad
    row stores nothing; the error names every bad row and column. Curve files are for the CLI only."""
    from nero_study.errors import ResultsFileError
    from nero_study.study.importing import parse_results

    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"The results file is larger than the limit of {MAX_IMPORT_BYTES} bytes",
        )
    try:
        parsed = parse_results(body.decode("utf-8-sig"), name=name, allow_curve_files=False)
    except UnicodeDecodeError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="The results file is not UTF-8 text"
        ) from None
    except ResultsFileError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None

    def store(session: Session) -> SweepPublic:
        sweep = repo.import_sweep(session, name=name, spec=parsed.spec, trials=parsed.trials)
        logger.info("sweep %s imported by %s (%d trials)", sweep.id, principal.name, len(parsed.trials))
        return _present(session, sweep)

    created = await in_session(request, store)
    response.headers["Location"] = f"/api/sweeps/{created.id}"
    return created


@router.get("", response_model=SweepsPublic, summary="List sweeps, newest first")
async def read_sweeps(
    request: Request,
    status_filter: Annotated[
        SweepStatus | None, Query(alias="status", description="Only sweeps in this status")
    ] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_SWEEPS_PAGE, description="Page size")] = 50,
) -> SweepsPublic:
    """A page of sweeps with their progress counts; ``total`` counts all that match ``status``."""

    def page(session: Session) -> SweepsPublic:
        sweeps, total = repo.list_sweeps(session, status=status_filter, offset=offset, limit=limit)
        counts = repo.sweep_counts_many(session, sweep_ids=[sweep.id for sweep in sweeps])
        data = [
            sweep_public(sweep, counts=counts[sweep.id], planned_trials=stored_planned_trials(sweep))
            for sweep in sweeps
        ]
        return SweepsPublic(data=data, total=total, offset=offset, limit=limit)

    return await in_session(request, page)


@router.get("/{sweep_id}", response_model=SweepPublic, summary="Read a sweep", responses=_NOT_FOUND)
async def read_sweep(sweep_id: SweepId, request: Request) -> SweepPublic:
    """The sweep's spec, status, trial counts by status, timestamps, error and execution mode."""

    def present(session: Session) -> SweepPublic:
        return _present(session, _get_or_404(session, sweep_id))

    return await in_session(request, present)


@router.post(
    "/{sweep_id}/cancel",
    response_model=SweepPublic,
    summary="Cancel a sweep",
    responses={
        **_UNAUTHORIZED,
        **_NOT_FOUND,
        409: {"model": ErrorPublic, "description": "The sweep has already finished"},
    },
)
def cancel_sweep(principal: TokenDep, sweep_id: SweepId, session: SessionDep) -> SweepPublic:
    """A queued sweep is cancelled at once, and so is a running one whose worker is gone (its lease expired); a
    running one with a live worker stops within seconds (its worker sees the request).

    Cancelling a cancelled sweep again is fine; a sweep that succeeded or failed cannot be cancelled (409).
    """
    sweep = repo.request_cancel(session, sweep_id=sweep_id)
    if sweep is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {sweep_id[:64]!r} not found")
    if sweep.status in SWEEP_FINISHED and sweep.status != "cancelled":
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=f"Sweep {sweep.id} has already {sweep.status}")
    logger.info("cancel of sweep %s requested by %s", sweep.id, principal.name)
    return _present(session, sweep)


@router.get("/{sweep_id}/trials", response_model=TrialsPublic, summary="List a sweep's trials", responses=_NOT_FOUND)
async def read_sweep_trials(
    sweep_id: SweepId,
    request: Request,
    status_filter: Annotated[
        TrialStatus | None, Query(alias="status", description="Only trials in this status")
    ] = None,
    task: Annotated[
        str | None, Query(max_length=100, description="Only this task (one the sweep does not run matches nothing)")
    ] = None,
    label: Annotated[
        str | None,
        Query(max_length=100, description="Only this optimiser variant, by its label (an unknown one matches nothing)"),
    ] = None,
    optimizer: Annotated[
        str | None,
        Query(
            max_length=100,
            description="Only this optimiser, all its variants (registry name; one the sweep lacks matches nothing)",
        ),
    ] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_TRIALS_PAGE, description="Page size")] = 100,
) -> dict[str, Any]:
    """A page of the sweep's trials (by id). The filters are free text, as the schema says: a task, label or
    optimiser the sweep does not have gives an empty page (``total`` 0), not an error; the sweep's own values are
    in its ``spec`` (``GET /api/sweeps/{id}``)."""

    def page(session: Session) -> dict[str, Any]:
        sweep = _get_or_404(session, sweep_id)
        rows, total = repo.trial_rows(
            session,
            sweep_id=sweep.id,
            status=status_filter,
            task=task,
            label=label,
            optimizer=optimizer,
            offset=offset,
            limit=limit,
        )
        # Plain dicts: FastAPI validates them into ``TrialsPublic`` once, then pydantic writes the JSON.
        return {"data": rows, "total": total, "offset": offset, "limit": limit}

    return await in_session(request, page)


class AnalysisPublic(BaseModel):
    """The robustness metrics of a sweep's finished trials (``nero_study.study.analysis``).

    ``per_optimizer``: one entry per (task, optimiser variant): best, eta_star, ootb, ootb_regret,
    lr_sensitivity, good_window (decades), expected_best, the lr curve. ``profiles``: performance profiles
    (``ootb`` and ``tuned``). A number without a finite value is ``null``: NaN (not
    available) and infinity (a ratio for an optimiser that never beat chance, or did not run on the task).
    ``failed_trials``: failed trials (a crash, not evidence about the lr), left out of every metric; each
    ``per_optimizer`` entry and curve point carries its own ``failed`` count. ``comparisons``: per task, the
    best optimiser against each other one, paired over seeds (95% t-interval of the difference; with one seed,
    "1 seed: no interval"); each entry's ``best_ci`` is the 95% t-interval over seeds at its best lr.
    ``verdict``: per task, the out-of-the-box winners, each optimiser's status (winner, behind, inconclusive
    with its reasons), regrets, grid-edge flag and one sentence (``nero_study.study.verdict``).
    """

    sweep_id: str
    status: SweepStatus
    finished_trials: int
    total_trials: int
    per_optimizer: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    profiles: dict[str, dict[str, Any]]
    failed_trials: int
    comparisons: list[dict[str, Any]]
    verdict: dict[str, Any]


@router.get(
    "/{sweep_id}/analysis",
    response_model=AnalysisPublic,
    summary="Robustness metrics of a sweep",
    responses={**_NOT_FOUND, 409: {"model": ErrorPublic, "description": "The trials cannot be analysed"}},
)
def read_sweep_analysis(sweep_id: SweepId, request: Request, session: SessionDep) -> Response:
    """Out-of-the-box regret, lr sensitivity, good-lr window, expected best of k and performance profiles.

    Computed from the trials finished so far (succeeded, diverged, failed), so it fills in while a sweep runs;
    once per sweep version for every viewer (the pages show the same analysis). ``ETag`` from the sweep's
    version: ``304`` for ``If-None-Match`` while nothing changed.
    """
    from nero_study.study.analysis import FINISHED_STATUSES
    from nero_study.study.verdict import sweep_verdict

    def render(snapshot: Any) -> bytes:
        if snapshot.analysis_error is not None:
            detail = f"Cannot analyse sweep: {snapshot.analysis_error}"
            raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=detail)
        frame = snapshot.trials
        finished = int(frame["status"].isin(FINISHED_STATUSES).sum()) if len(frame) else 0
        public = AnalysisPublic(
            sweep_id=snapshot.id,
            status=snapshot.status,
            finished_trials=finished,
            total_trials=len(frame),
            **json_safe(snapshot.analysis.to_dict()),
            verdict=sweep_verdict(snapshot.analysis).to_dict(),
        )
        return JSONResponse(public.model_dump(mode="json")).body

    return _answer_or_404(
        request, session, sweep_id=sweep_id, representation="analysis", render=render, media_type="application/json"
    )


def _answer_or_404(request: Request, session: Session, *, sweep_id: str, **answer: Any) -> Response:
    """:func:`api.cache.sweep_answer`, or a 404 naming the sweep when there is no such sweep."""
    found = sweep_answer(request, session, sweep_id=sweep_id, **answer)
    if found is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {sweep_id[:64]!r} not found")
    return found


EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def export_frame(session: Session, sweep: Sweep) -> Any:
    """The sweep's trials, one row per trial; settings columns as JSON text (the same in CSV and Parquet)."""
    frame = repo.trials_frame(session, sweep_id=sweep.id)
    for column in ("hyperparameters", "task_options"):
        if column in frame.columns:
            frame[column] = [json.dumps(value or {}, sort_keys=True) for value in frame[column]]
    return frame


#: A text cell starting with one of these is a formula to a spreadsheet (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(frame: Any) -> Any:
    """``frame`` with every text cell that a spreadsheet would run as a formula prefixed by ``'`` (shown as
    text). Numbers are left alone: a negative number is data, not a formula."""
    from pandas.api.types import is_numeric_dtype

    frame = frame.copy()
    for column in frame.columns:
        if not is_numeric_dtype(frame[column]):
            frame[column] = [
                f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
                for value in frame[column]
            ]
    return frame


def _export(session: Session, sweep_id: str, kind: str) -> Response:
    sweep = _get_or_404(session, sweep_id)
    frame = export_frame(session, sweep)
    if kind == "csv":
        content = csv_safe(frame).to_csv(index=False).encode("utf-8")
    else:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        content = buffer.getvalue()
    filename = f"sweep-{sweep.id}.{kind}"
    return Response(
        content=content,
        media_type=EXPORT_MEDIA_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/{sweep_id}/export.csv",
    response_class=Response,
    summary="Export a sweep's trials as CSV",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **_NOT_FOUND},
)
def export_csv(sweep_id: SweepId, session: SessionDep) -> Response:
    """One row per trial; empty cells for missing values, ``inf`` for infinite metrics."""
    return _export(session, sweep_id, "csv")


@router.get(
    "/{sweep_id}/export.parquet",
    response_class=Response,
    summary="Export a sweep's trials as Parquet",
    responses={
        200: {"content": {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}},
        **_NOT_FOUND,
    },
)
def export_parquet(sweep_id: SweepId, session: SessionDep) -> Response:
    """One row per trial; NaN and infinite metrics kept as they are."""
    return _export(session, sweep_id, "parquet")


TABLE_MEDIA_TYPES = {"tex": "application/x-tex; charset=utf-8", "md": "text/markdown; charset=utf-8"}


def _table(request: Request, session: Session, sweep_id: str, kind: str) -> Response:
    from nero_study.study.table_export import latex_table, markdown_table

    def render(snapshot: Any) -> bytes:
        if snapshot.analysis_error is not None:
            detail = f"Cannot analyse sweep: {snapshot.analysis_error}"
            raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=detail)
        if kind == "tex":
            return latex_table(snapshot.analysis, caption=f"nero-study sweep {snapshot.id} ({snapshot.name})").encode()
        return markdown_table(snapshot.analysis).encode()

    return _answer_or_404(
        request,
        session,
        sweep_id=sweep_id,
        representation=f"table-{kind}",
        render=render,
        media_type=TABLE_MEDIA_TYPES[kind],
        headers={"Content-Disposition": f'inline; filename="{sweep_id}-table.{kind}"'},
    )


@router.get(
    "/{sweep_id}/table.tex",
    response_class=Response,
    summary="The paper-style table as booktabs LaTeX",
    responses={200: {"content": {"application/x-tex": {"schema": {"type": "string"}}}}, **_NOT_FOUND},
)
def read_table_tex(sweep_id: SweepId, request: Request, session: SessionDep) -> Response:
    """A ``tabular`` (needs ``\\usepackage{booktabs}``): mean ± 95% t half-width at the best lr, the out-of-the-box
    metric, winners in bold (``nero_study.study.table_export``)."""
    return _table(request, session, sweep_id, "tex")


@router.get(
    "/{sweep_id}/table.md",
    response_class=Response,
    summary="The paper-style table as Markdown",
    responses={200: {"content": {"text/markdown": {"schema": {"type": "string"}}}}, **_NOT_FOUND},
)
def read_table_md(sweep_id: SweepId, request: Request, session: SessionDep) -> Response:
    """The same table as :func:`read_table_tex`, as a GitHub-flavoured Markdown table."""
    return _table(request, session, sweep_id, "md")


FigureFile = Annotated[
    str,
    Path(
        description="A figure of the sweep page and a format, e.g. ``lr-sensitivity.svg`` or ``curves.pdf``",
        max_length=100,
        pattern=r"^[a-z0-9-]+\.(svg|pdf)$",
    ),
]


@router.get(
    "/{sweep_id}/figures/{figure_file}",
    response_class=Response,
    summary="One figure of the sweep page as SVG or PDF",
    responses={
        200: {
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            }
        },
        404: {"model": ErrorPublic, "description": "No sweep with this id, or no figure of this name"},
        422: {"model": ErrorPublic, "description": "A format other than svg or pdf (the path must match its pattern)"},
        503: {"model": ErrorPublic, "description": "No browser to render with (Chromium is not installed)"},
    },
)
def read_sweep_figure(sweep_id: SweepId, figure_file: FigureFile, request: Request, session: SessionDep) -> Response:
    """The figure the sweep page draws (``lr-sensitivity``, ``ootb-vs-tuned``, ``heatmap``, ``profiles``,
    ``expected-best``, ``curves``, ``progress``), rendered on the server in Chromium as SVG or PDF for a paper
    (``dashboards.figure_export``). Rendered once per sweep version (a few seconds); ``ETag`` as for the page."""
    from dashboards.figure_export import (
        FIGURE_FORMATS,
        ChromiumMissing,
        FigureExportError,
        figure_filename,
        render_figure,
    )
    from dashboards.pages import SWEEP_FIGURES, updated_sweep_figures

    name, _, file_format = figure_file.rpartition(".")
    names = [figure for figure, _ in SWEEP_FIGURES]
    if name not in names:
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"No figure {name[:64]!r}; a sweep's figures: {', '.join(names)}",
        )
    chromium = request.app.state.settings.chromium_path

    def render(snapshot: Any) -> bytes:
        figures = request.app.state.sweep_view_cache.figures_of(snapshot, updated_sweep_figures)
        try:
            return render_figure(figures[name], file_format, name=name, chromium=chromium)
        except ChromiumMissing as exc:
            raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
        except FigureExportError as exc:
            logger.warning("figure %s of sweep %s not rendered: %s", figure_file, snapshot.id, exc)
            raise HTTPException(status_code=status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None

    return _answer_or_404(
        request,
        session,
        sweep_id=sweep_id,
        representation=f"figure-{figure_file}",
        render=render,
        media_type=FIGURE_FORMATS[file_format],
        headers={"Content-Disposition": f'attachment; filename="{figure_filename(sweep_id, name, file_format)}"'},
    )
