"""What can be swept (``/api/tasks``, ``/api/optimizers``) and whether the service is up (``/healthz``)."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import ReaderDep, SessionDep
from api.schemas import HealthPublic, OptimizerPublic, TaskPublic
from nero_study.json_safe import json_safe
from nero_study.store import db, repo
from nero_study.store.models import utc_now

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
    responses={
        503: {
            "model": HealthPublic,
            "description": "The database does not answer or cannot write, or fewer workers are alive than required",
        }
    },
)
def healthz(session: SessionDep, request: Request, reader: ReaderDep) -> HealthPublic | JSONResponse:
    """``ok`` when the database answers a query and commits a write and enough workers are alive (their heartbeat
    rows younger than ``NERO_STUDY_WORKER_ALIVE_SECONDS``, at least ``NERO_STUDY_HEALTH_MIN_WORKERS``, default 1;
    under ``serve`` also every worker process it started running); also the migration revision it is at and the
    newest shipped. 503 otherwise (a service that cannot store or run a sweep is not healthy).

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
    workers, enough = _workers(session, request)
    return HealthPublic(
        status="ok" if enough else "error", database="ok", revision=revision, head=_head_revision(), workers=workers
    )


def _workers(session: SessionDep, request: Request) -> tuple[dict[str, Any], bool]:
    """The live workers (heartbeat row younger than the window), and whether there are enough of them: at least
    ``health_min_workers``, and under ``serve`` every child process it started running."""
    settings = request.app.state.settings
    now = utc_now()
    live = [
        worker for worker in repo.list_workers(session)
        if repo.worker_is_alive(worker, within_seconds=settings.worker_alive_seconds, now=now)
    ]
    workers: dict[str, Any] = {
        "alive": len(live),
        "required": settings.health_min_workers,
        "window_s": settings.worker_alive_seconds,
        "live": [
            {"id": w.id, "host": w.host, "pid": w.pid, "current_sweep": w.current_sweep,
             "last_seen": w.last_seen.isoformat()}
            for w in live
        ],
    }
    enough = len(live) >= settings.health_min_workers
    supervised = getattr(request.app.state, "worker_status", None)
    if supervised is not None:  # serve's own children (workers/supervisor.py)
        children = supervised()
        workers.update(children)
        enough = enough and children["running"] >= children["expected"]
    return workers, enough
