"""What can be swept (``/api/tasks``, ``/api/optimizers``) and whether the service is up (``/healthz``)."""

from __future__ import annotations

import logging
from functools import cache

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ReaderDep, SessionDep
from api.schemas import HealthPublic, OptimizerPublic, TaskPublic
from nero_study.json_safe import json_safe
from nero_study.store import db, repo

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["meta"])
health_router = APIRouter(tags=["health"])


@cache
def _head_revision() -> str | None:
    return db.head_revision()


def _task_public(name: str) -> TaskPublic:
    from nero_study.tasks.registry import get_task

    try:
        info = get_task(name).describe()
    except Exception as exc:  # noqa: BLE001 - a task whose module is missing is listed as unavailable
        return TaskPublic(name=name, available=False, error=f"{type(exc).__name__}: {exc}")
    return TaskPublic(available=True, **info)


@router.get("/tasks", response_model=list[TaskPublic], summary="List the benchmark tasks")
def list_tasks() -> list[TaskPublic]:
    """Every registered task with its metric, whether lower is better, the metric at chance, its budgets, its
    caveat, and per preset and optimiser the settings its trials use (with the task's own paper overrides)."""
    from nero_study.tasks.registry import task_names

    return [_task_public(name) for name in task_names()]


@router.get("/optimizers", response_model=list[OptimizerPublic], summary="List the registered optimisers")
def list_optimizers() -> list[OptimizerPublic]:
    """Every optimiser with its default (out-of-the-box) learning rate and where it comes from, its presets,
    the settings a sweep may set, and the tasks that give it other settings under the paper preset."""
    from nero_study.optim.registry import list_optimizers as registered
    from nero_study.tasks.registry import optimizer_task_overrides

    return [
        OptimizerPublic.model_validate(
            json_safe({**info.describe(), "task_overrides": optimizer_task_overrides(info.name)})
        )
        for info in registered()
    ]


@health_router.get(
    "/healthz",
    response_model=HealthPublic,
    summary="Health check (database reads and writes)",
    responses={503: {"model": HealthPublic, "description": "The database does not answer or cannot write"}},
)
def healthz(session: SessionDep, request: Request, reader: ReaderDep) -> HealthPublic | JSONResponse:
    """``ok`` when the database answers a query and commits a write; also the migration revision it is at and
    the newest shipped. 503 when either fails (a service that cannot store a sweep is not healthy).

    Open to every caller (probes send no token), but when reads need a token a caller without one gets only
    ``status`` and ``database`` (``ok`` or ``error``): no revision, error names or workers."""
    body = _health(session, request)
    if not reader:
        body = HealthPublic(status=body.status, database="ok" if body.database == "ok" else "error")
    if body.status == "ok":
        return body
    return JSONResponse(status_code=503, content=body.model_dump(mode="json"))


def _health(session: SessionDep, request: Request) -> HealthPublic:
    try:
        session.execute(sa.select(1)).scalar_one()
        # On the session's own connection: on SQLite a second connection would wait for this one's lock.
        revision = MigrationContext.configure(session.connection()).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - any database failure means "unhealthy", not a 500
        logger.warning("health check failed: %s", type(exc).__name__)
        return HealthPublic(status="error", database=f"unreachable ({type(exc).__name__})")
    try:
        repo.check_writable(session)
    except Exception as exc:  # noqa: BLE001 - a failed write means "unhealthy", not a 500
        logger.warning("health check: the database cannot write: %s", type(exc).__name__)
        return HealthPublic(status="error", database=f"not writable ({type(exc).__name__})", revision=revision)
    worker_status = getattr(request.app.state, "worker_status", None)
    workers = worker_status() if worker_status is not None else None
    status = "error" if workers is not None and workers["alive"] < workers["expected"] else "ok"
    return HealthPublic(status=status, database="ok", revision=revision, head=_head_revision(), workers=workers)
