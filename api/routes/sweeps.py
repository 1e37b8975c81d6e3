"""``/api/sweeps``: submit (queued for a worker), list, read, cancel, list trials, analyse and export a sweep.

Routes are thin: data access goes through :mod:`nero_study.store.repo`; the sweep spec is validated by
``SweepSpec`` itself (its messages name the field and the valid values) against this service's trial limit.
"""

from __future__ import annotations

import io
import json
import logging
import math
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep, TokenDep, in_session
from api.errors import ERROR_RESPONSES
from api.schemas import (
    PAPER_SWEEP_EXAMPLE,
    QUICK_SWEEP_EXAMPLE,
    ErrorPublic,
    FieldErrorPublic,
    SweepCreate,
    SweepLinks,
    SweepPublic,
    SweepsPublic,
    SweepStatus,
    TrialsPublic,
    TrialStatus,
)
from nero_study.json_safe import json_safe
from nero_study.store import repo
from nero_study.store.models import Sweep
from nero_study.study.plan import count_trials, stored_planned_trials

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

SWEEP_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A sweep spec (JSON). Each optimiser's default lr is added to its grid.",
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/SweepCreate"},
                "examples": {
                    "quick": {"summary": "A quick sweep (about a minute on a CPU)", "value": QUICK_SWEEP_EXAMPLE},
                    "paper": {"summary": "The paper's protocol on two proxy tasks", "value": PAPER_SWEEP_EXAMPLE},
                },
            }
        },
    }
}


# --- the request body ---------------------------------------------------------------------------------


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"The sweep spec is larger than the limit of {limit} bytes (max_spec_bytes)",
    )


def _body_error(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body",), "msg": message, "type": "json_invalid"}])


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; use a finite number")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN, Infinity and out-of-range numbers are refused (422)."""
    if not body.strip():
        raise _body_error("A sweep spec (a JSON object) is required; the body is empty")
    try:
        data = json.loads(body, parse_float=_finite_float, parse_constant=_reject_constant)
    except RecursionError:
        raise _body_error("Invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, huge integers
        raise _body_error(f"Invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _body_error(f"A sweep spec must be a JSON object of fields; got {type(data).__name__}")
    bad_text = _first_unstorable_text(data)
    if bad_text is not None:
        raise _body_error(f"Invalid text {bad_text!r}: NUL characters and unpaired surrogates cannot be stored")
    return data


def _first_unstorable_text(value: Any) -> str | None:
    """The first string (key or value, at any depth) that a database cannot store as text, if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return item[:40]
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item.encode("utf-8", "backslashreplace").decode("ascii")[:40]
    return None


async def read_sweep_spec(request: Request, settings: SettingsDep) -> SweepCreate:
    """The validated spec from the request body; 413 past ``max_spec_bytes``, 422 naming the field if invalid.

    The body is read here rather than by FastAPI so that the size limit holds while reading and the spec is
    validated against this service's ``max_trials_per_sweep``.
    """
    limit = settings.max_spec_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    data = parse_json_object(b"".join(chunks))
    context = {"max_trials_per_sweep": settings.max_trials_per_sweep}
    try:
        # Off the event loop: validation builds each optimiser once to check its settings.
        return await run_in_threadpool(SweepCreate.model_validate, data, context=context)
    except ValidationError as exc:
        errors = [
            {"loc": ("body", *error["loc"]), "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


# --- presenting ---------------------------------------------------------------------------------------


def sweep_public(sweep: Sweep, *, counts: dict[str, int], planned_trials: int | None) -> SweepPublic:
    """The API's view of a stored sweep."""
    base = f"/api/sweeps/{sweep.id}"
    return SweepPublic(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        spec=json_safe(dict(sweep.spec or {})),
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


def default_name(spec: SweepCreate) -> str:
    """A name for an unnamed sweep: its tasks x its optimiser labels (at most 200 characters)."""
    name = f"{', '.join(spec.tasks)} x {', '.join(spec.labels)} ({spec.protocol})"
    return name if len(name) <= 200 else name[:197] + "..."


def stored_spec(spec: SweepCreate) -> dict[str, Any]:
    """The spec as stored: every field with its value, but ``max_trials`` only if the user set it.

    A default ``max_trials`` comes from this service's limit; storing it would make it an explicit request
    that a worker with a lower limit refuses.
    """
    data = spec.model_dump(mode="json")
    if "max_trials" not in spec.model_fields_set:
        data.pop("max_trials", None)
    return data


def _create_or_replay(
    session: Session, *, spec: dict[str, Any], name: str, idempotency_key: str | None, planned_trials: int
) -> tuple[Sweep, bool]:
    """``repo.create_sweep`` and whether this call inserted the sweep (``False``: an idempotent replay)."""
    inserted: list[object] = []

    def on_insert(_session: Session, instance: object) -> None:
        inserted.append(instance)

    sa.event.listen(session, "pending_to_persistent", on_insert)
    try:
        sweep = repo.create_sweep(
            session, spec=spec, name=name, idempotency_key=idempotency_key, planned_trials=planned_trials
        )
    finally:
        sa.event.remove(session, "pending_to_persistent", on_insert)
    return sweep, any(instance is sweep for instance in inserted)


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
    response: Response,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepPublic:
    """Validate the spec, check its planned trial count against the limit, and queue it.

    The API never trains: a worker claims the queued sweep. With an ``Idempotency-Key`` header, sending
    the same request again returns the sweep already created, with status 200.
    """
    name = spec.name or default_name(spec)
    try:
        sweep, created = _create_or_replay(
            session,
            spec=stored_spec(spec),
            name=name,
            idempotency_key=idempotency_key,
            planned_trials=count_trials(spec),
        )
    except repo.IdempotencyKeyReused as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if created:
        logger.info("sweep %s queued by %s", sweep.id, principal.name)
    else:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/api/sweeps/{sweep.id}"
    return _present(session, sweep)


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
def cancel_sweep(
    principal: TokenDep, sweep_id: SweepId, session: SessionDep
) -> SweepPublic:
    """A queued sweep is cancelled at once; a running one stops within seconds (its worker sees the request).

    Cancelling a cancelled sweep again is fine; a sweep that succeeded or failed cannot be cancelled (409).
    """
    sweep = repo.request_cancel(session, sweep_id=sweep_id)
    if sweep is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"Sweep {sweep_id[:64]!r} not found")
    if sweep.status in ("succeeded", "failed"):
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=f"Sweep {sweep.id} has already {sweep.status}")
    logger.info("cancel of sweep %s requested by %s", sweep.id, principal.name)
    return _present(session, sweep)


def _spec_values(sweep: Sweep, key: str) -> list[str]:
    spec = sweep.spec or {}
    if key == "tasks":
        return [str(task) for task in spec.get("tasks", [])]
    variants = [v if isinstance(v, dict) else {"name": v} for v in spec.get("optimizers", [])]
    if key == "labels":
        return [str(v.get("label") or v.get("name")) for v in variants]
    return list(dict.fromkeys(str(v.get("name")) for v in variants))


def _check_filter(sweep: Sweep, field: str, value: str | None, valid: list[str]) -> None:
    if value is None or value in valid:
        return
    error = FieldErrorPublic(
        field=field,
        location="query",
        message=f"Unknown {field} {value[:100]!r} for sweep {sweep.id}; valid: {', '.join(valid)}",
        type="value_error",
    )
    raise HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=ErrorPublic(detail=f"{error.field}: {error.message}", errors=[error]).model_dump(),
    )


@router.get("/{sweep_id}/trials", response_model=TrialsPublic, summary="List a sweep's trials", responses=_NOT_FOUND)
async def read_sweep_trials(
    sweep_id: SweepId,
    request: Request,
    status_filter: Annotated[
        TrialStatus | None, Query(alias="status", description="Only trials in this status")
    ] = None,
    task: Annotated[str | None, Query(max_length=100, description="Only this task")] = None,
    label: Annotated[str | None, Query(max_length=100, description="Only this optimiser variant (its label)")] = None,
    optimizer: Annotated[
        str | None, Query(max_length=100, description="Only this optimiser (registry name, all its variants)")
    ] = None,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_TRIALS_PAGE, description="Page size")] = 100,
) -> dict[str, Any]:
    """A page of the sweep's trials (by id); filters must name a task, label or optimiser of the sweep."""

    def page(session: Session) -> dict[str, Any]:
        sweep = _get_or_404(session, sweep_id)
        _check_filter(sweep, "task", task, _spec_values(sweep, "tasks"))
        _check_filter(sweep, "label", label, _spec_values(sweep, "labels"))
        _check_filter(sweep, "optimizer", optimizer, _spec_values(sweep, "optimizers"))
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
    """

    sweep_id: str
    status: SweepStatus
    finished_trials: int
    total_trials: int
    per_optimizer: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    profiles: dict[str, dict[str, Any]]


@router.get(
    "/{sweep_id}/analysis",
    response_model=AnalysisPublic,
    summary="Robustness metrics of a sweep",
    responses={**_NOT_FOUND, 409: {"model": ErrorPublic, "description": "The trials cannot be analysed"}},
)
def read_sweep_analysis(sweep_id: SweepId, session: SessionDep) -> AnalysisPublic:
    """Out-of-the-box regret, lr sensitivity, good-lr window, expected best of k and performance profiles.

    Computed from the trials finished so far (succeeded, diverged, failed), so it fills in while a sweep runs.
    """
    from nero_study.study.analysis import FINISHED_STATUSES, analyze_sweep

    sweep = _get_or_404(session, sweep_id)
    frame = repo.trials_frame(session, sweep_id=sweep.id)
    try:
        result = analyze_sweep(frame).to_dict()
    except ValueError as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=f"Cannot analyse sweep: {exc}") from None
    finished = int(frame["status"].isin(FINISHED_STATUSES).sum()) if len(frame) else 0
    return AnalysisPublic(
        sweep_id=sweep.id,
        status=sweep.status,
        finished_trials=finished,
        total_trials=len(frame),
        **json_safe(result),
    )


EXPORT_MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def export_frame(session: Session, sweep: Sweep) -> Any:
    """The sweep's trials, one row per trial; settings columns as JSON text (the same in CSV and Parquet)."""
    frame = repo.trials_frame(session, sweep_id=sweep.id)
    for column in ("hyperparameters", "task_options"):
        if column in frame.columns:
            frame[column] = [json.dumps(value or {}, sort_keys=True) for value in frame[column]]
    return frame


def _export(session: Session, sweep_id: str, kind: str) -> Response:
    sweep = _get_or_404(session, sweep_id)
    frame = export_frame(session, sweep)
    if kind == "csv":
        content = frame.to_csv(index=False).encode("utf-8")
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
