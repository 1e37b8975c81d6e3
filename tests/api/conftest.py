"""Fixtures for the API tests: an app on a fresh migrated SQLite file per test, a client, store helpers.

The database is migrated once per test session into a template file that each test copies (a migration
per test would cost more than the test). No Ray, no worker: trials are written with the repo functions.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from nero_study.settings import Settings
from nero_study.store import db, repo

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK_SPEC: dict[str, Any] = {
    "name": "quick",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.001, 0.01, 0.1],
    "seeds": [0],
    "budget": "smoke",
}


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(template_db: Path, tmp_path: Path) -> str:
    path = tmp_path / "api.db"
    shutil.copyfile(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    # No worker runs in the API tests: /healthz judges the database only (tests/api/test_workers_health.py the rest).
    return Settings(
        database_url=database_url, api_tokens=TOKEN, max_trials_per_sweep=200, max_spec_bytes=20_000,
        health_min_workers=0,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(app: FastAPI) -> Iterator[Session]:
    with app.state.session_factory() as store_session:
        yield store_session


@pytest.fixture
def auth() -> dict[str, str]:
    """The Authorization header with the test token."""
    return dict(AUTH)


@pytest.fixture
def quick_spec() -> dict[str, Any]:
    """A valid spec: digits-mlp, nero and adam, three learning rates, one seed (6 trials)."""
    return dict(QUICK_SPEC)


@pytest.fixture
def submit(client: TestClient) -> Callable[..., dict[str, Any]]:
    """``submit(spec=None, **headers)``: POST a spec with the test token, assert 201, return the sweep."""

    def post(spec: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        response = client.post("/api/sweeps", json=spec or QUICK_SPEC, headers={**AUTH, **headers})
        assert response.status_code == 201, response.text
        return response.json()

    return post


@pytest.fixture
def finished_trials(session: Session) -> Callable[..., dict[tuple[str, float], int]]:
    """``finished_trials(sweep_id, {(label, lr): (status, metric)})``: see :func:`add_finished_trials`."""

    def add(sweep_id: str, outcomes: dict[tuple[str, float], tuple[str, float]], **kwargs: Any) -> dict:
        return add_finished_trials(session, sweep_id, outcomes, **kwargs)

    return add


def add_finished_trials(
    session: Session, sweep_id: str, outcomes: dict[tuple[str, float], tuple[str, float]], *, task: str = "digits-mlp"
) -> dict[tuple[str, float], int]:
    """Store one finished trial per (label, lr) with (status, final metric); returns their ids.

    Metrics are test errors (lower is better) with 0.9 at initialisation, as for digits-mlp; each trial
    gets a two-point curve from 0.9 to its final metric.
    """
    items = [
        {"task": task, "optimizer": label, "label": label, "lr": lr, "seed": 0, "budget": "smoke"}
        for label, lr in outcomes
    ]
    rows = repo.add_trials(session, sweep_id=sweep_id, trials=items)
    ids: dict[tuple[str, float], int] = {}
    for row, (key, (status, metric)) in zip(rows, outcomes.items(), strict=True):
        ids[key] = row.id
        finite = [value for value in (0.9, metric) if math.isfinite(value)]
        repo.finish_trial(
            session,
            trial_id=row.id,
            status=status,
            metric=metric,
            best_metric=min(finite),
            initial_metric=0.9,
            metric_name="test_error",
            lower_is_better=True,
            wall_s=1.5,
            device="cpu",
            steps=10,
            error="training loss became nan at step 3" if status == "diverged" else None,
            curve=[
                {"step": 0, "epoch": 0.0, "train_loss": 2.3, "metric": 0.9},
                {"step": 10, "epoch": 1.0, "train_loss": math.nan if status == "diverged" else 0.5, "metric": metric},
            ],
        )
    return ids
