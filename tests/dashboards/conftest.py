"""Fixtures for the dashboard tests: a sweep with known numbers (as a frame, or written through the repo into
a fresh migrated SQLite file), the app with the pages router, and a test client. No Ray, no worker.

The known sweep (hand-computed values are in the tests' comments):

- ``digits-mlp`` (test error, lower is better, 0.9 at initialisation), seeds 0 and 1:
  nero (default lr 0.01): lr 0.001 -> 0.5, 0.7; 0.01 -> 0.2, 0.4; 0.1 -> diverged, 0.8; 1.0 -> diverged twice.
  adam (default lr 0.001): lr 0.001 -> 0.35, 0.45; 0.01 -> 0.2, 0.3; 0.1 -> 0.6, 0.6; 1.0 -> failed twice.
- ``ppo-cartpole`` (mean return, higher is better, 10 at initialisation), seed 0 only:
  nero: lr 0.001 -> 50, 0.01 -> 100; adam: lr 0.001 -> 150, 0.01 -> 20.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from nero_study.settings import Settings
from nero_study.store import db, repo

NAN = math.nan
TASK_INFO: dict[str, tuple[str, bool, float]] = {
    "digits-mlp": ("test_error", True, 0.9),
    "ppo-cartpole": ("mean_return", False, 10.0),
}
#: (task, label, lr, seed, status, final metric)
KNOWN_OUTCOMES: tuple[tuple[str, str, float, int, str, float | None], ...] = (
    ("digits-mlp", "nero", 0.001, 0, "succeeded", 0.5),
    ("digits-mlp", "nero", 0.001, 1, "succeeded", 0.7),
    ("digits-mlp", "nero", 0.01, 0, "succeeded", 0.2),
    ("digits-mlp", "nero", 0.01, 1, "succeeded", 0.4),
    ("digits-mlp", "nero", 0.1, 0, "diverged", NAN),
    ("digits-mlp", "nero", 0.1, 1, "succeeded", 0.8),
    ("digits-mlp", "nero", 1.0, 0, "diverged", NAN),
    ("digits-mlp", "nero", 1.0, 1, "diverged", math.inf),
    ("digits-mlp", "adam", 0.001, 0, "succeeded", 0.35),
    ("digits-mlp", "adam", 0.001, 1, "succeeded", 0.45),
    ("digits-mlp", "adam", 0.01, 0, "succeeded", 0.2),
    ("digits-mlp", "adam", 0.01, 1, "succeeded", 0.3),
    ("digits-mlp", "adam", 0.1, 0, "succeeded", 0.6),
    ("digits-mlp", "adam", 0.1, 1, "succeeded", 0.6),
    ("digits-mlp", "adam", 1.0, 0, "failed", None),
    ("digits-mlp", "adam", 1.0, 1, "failed", None),
    ("ppo-cartpole", "nero", 0.001, 0, "succeeded", 50.0),
    ("ppo-cartpole", "nero", 0.01, 0, "succeeded", 100.0),
    ("ppo-cartpole", "adam", 0.001, 0, "succeeded", 150.0),
    ("ppo-cartpole", "adam", 0.01, 0, "succeeded", 20.0),
)
KNOWN_SPEC: dict[str, Any] = {
    "name": "known",
    "tasks": ["digits-mlp", "ppo-cartpole"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.001, 0.01, 0.1, 1.0],
    "seeds": [0, 1],
    "budget": "smoke",
}


def known_frame() -> pd.DataFrame:
    """The known sweep as a trials frame (the columns of ``repo.trials_frame`` that matter)."""
    rows = []
    for index, (task, label, lr, seed, status, metric) in enumerate(KNOWN_OUTCOMES, start=1):
        metric_name, lower, initial = TASK_INFO[task]
        rows.append(
            {
                "id": index,
                "task": task,
                "optimizer": label,
                "label": label,
                "lr": lr,
                "seed": seed,
                "status": status,
                "metric": NAN if metric is None else metric,
                "initial_metric": initial,
                "metric_name": metric_name,
                "lower_is_better": lower,
            }
        )
    return pd.DataFrame(rows)


def trial_curve_points(initial: float, final: float | None, status: str, steps: int = 3) -> list[dict[str, Any]]:
    """A short learning curve from ``initial`` to ``final``; a diverged run ends with a NaN training loss."""
    points = []
    for index in range(steps):
        fraction = index / max(1, steps - 1)
        end = final if final is not None and math.isfinite(final) else initial
        last = index == steps - 1
        points.append(
            {
                "step": 5 * index,
                "epoch": float(index),
                "metric": initial + (end - initial) * fraction if not (last and status == "diverged") else NAN,
                "train_loss": NAN if last and status == "diverged" else 2.0 - fraction,
            }
        )
    return points


@pytest.fixture
def known_trials() -> pd.DataFrame:
    return known_frame()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboards-template") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(template_db: Path, tmp_path: Path) -> str:
    path = tmp_path / "dashboards.db"
    shutil.copyfile(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def app(database_url: str) -> FastAPI:
    return create_app(Settings(database_url=database_url, api_tokens="test-token"))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = db.make_engine(database_url)
    with db.session_factory(engine)() as store_session:
        yield store_session
    engine.dispose()


Outcome = tuple[str, str, float, int, str, float | None]


def write_trials(
    session: Session,
    sweep_id: str,
    outcomes: Sequence[Outcome],
    *,
    start: datetime | None = None,
    curves: bool = True,
    budget: str = "smoke",
    preset: str = "paper",
) -> list[int]:
    """Store and finish one trial per outcome (at ``budget`` and ``preset``), one second apart from ``start``;
    returns the trial ids."""
    start = start or datetime.now(UTC) - timedelta(seconds=len(outcomes) + 5)
    items = [
        {"task": task, "optimizer": label, "label": label, "lr": lr, "seed": seed, "budget": budget, "preset": preset}
        for task, label, lr, seed, _, _ in outcomes
    ]
    rows = repo.add_trials(session, sweep_id=sweep_id, trials=items)
    for index, (row, (task, _, _, _, status, metric)) in enumerate(zip(rows, outcomes, strict=True)):
        metric_name, lower, initial = TASK_INFO[task]
        now = start + timedelta(seconds=index + 1)
        repo.mark_trial_running(session, trial_id=row.id, attempt=1, now=now - timedelta(seconds=0.5))
        repo.finish_trial(
            session,
            trial_id=row.id,
            status=status,
            metric=metric,
            best_metric=metric,
            initial_metric=initial,
            metric_name=metric_name,
            lower_is_better=lower,
            wall_s=0.5,
            device="cpu",
            steps=10,
            error="loss became nan" if status == "diverged" else ("boom" if status == "failed" else None),
            attempt=1,
            curve=trial_curve_points(initial, metric, status) if curves else None,
            now=now,
        )
    return [row.id for row in rows]


def store_sweep(
    session: Session,
    name: str = "known",
    outcomes: Sequence[Outcome] = KNOWN_OUTCOMES,
    *,
    status: str = "succeeded",
    spec: dict[str, Any] | None = None,
    pending: Sequence[tuple[str, str, float, int]] = (),
) -> str:
    """Create a sweep, claim it, write the finished ``outcomes`` and the ``pending`` trials (task, label, lr,
    seed) at the spec's budget and preset, then end it with ``status`` (``running`` leaves it running;
    ``queued`` leaves it unclaimed and without trials: store it last, or the next sweep's claim takes it).
    Returns the sweep id."""
    spec = {**(spec or KNOWN_SPEC), "name": name}
    sweep = repo.create_sweep(session, spec=spec, name=name)[0]
    if status == "queued":
        return sweep.id
    claimed = repo.claim_next_sweep(session, owner="tests", lease_seconds=3600)
    assert claimed is not None and claimed.id == sweep.id
    budget, preset = spec.get("budget", "smoke"), spec.get("preset", "paper")
    write_trials(session, sweep.id, outcomes, budget=budget, preset=preset)
    if pending:
        repo.add_trials(
            session,
            sweep_id=sweep.id,
            trials=[
                {"task": t, "optimizer": label, "label": label, "lr": lr, "seed": seed, "budget": budget}
                for t, label, lr, seed in pending
            ],
        )
    if status != "running":
        assert repo.finish_sweep(session, sweep_id=sweep.id, owner="tests", status=status)
    return sweep.id


@pytest.fixture
def make_sweep(session: Session) -> Callable[..., str]:
    """``make_sweep(name, outcomes=KNOWN_OUTCOMES, status="succeeded", spec=KNOWN_SPEC, pending=())``:
    :func:`store_sweep` on the test's session."""

    def make(name: str = "known", outcomes: Sequence[Outcome] = KNOWN_OUTCOMES, **kwargs: Any) -> str:
        return store_sweep(session, name, outcomes, **kwargs)

    return make


@pytest.fixture
def known_outcomes() -> tuple[Outcome, ...]:
    """The known sweep's outcomes: (task, label, lr, seed, status, metric)."""
    return KNOWN_OUTCOMES


@pytest.fixture
def store_trials(session: Session) -> Callable[..., list[int]]:
    """``store_trials(sweep_id, outcomes, curves=True)``: :func:`write_trials` on the test's session."""

    def store(sweep_id: str, outcomes: Sequence[Outcome], *, curves: bool = True) -> list[int]:
        return write_trials(session, sweep_id, outcomes, curves=curves)

    return store
