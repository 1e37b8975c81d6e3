"""A sweep's page, ``figures.json`` and ``/analysis`` after each kind of change are the same bytes whether they
were computed incrementally (the trials read column by column, figures whose arguments did not change taken
over from the previous version) or from scratch by a fresh app, and the analysis equals the reference: every
trial read one by one through the ORM and analysed record by record."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from nero_study.json_safe import json_safe
from nero_study.store import repo
from nero_study.store.models import Trial
from nero_study.study.analysis import analyze_sweep

SPEC: dict[str, Any] = {
    "name": "exact answers",
    "tasks": ["digits-mlp", "text-lm"],
    "optimizers": ["nero", "sgd", "adam"],
    "lrs": [0.001, 0.01, 0.1, 1.0],
    "seeds": [0, 1, 2],
    "budget": "smoke",
}


def _finish(session, trial_id: int, rng: random.Random, *, lr: float) -> None:
    draw = rng.random()
    status = "failed" if draw < 0.05 else "diverged" if draw < 0.2 or lr == 1.0 and draw < 0.6 else "succeeded"
    metric = math.nan if status != "succeeded" else rng.uniform(0.03, 0.85)
    repo.finish_trial(
        session, trial_id=trial_id, status=status, metric=metric, best_metric=0.9 if math.isnan(metric) else metric,
        initial_metric=rng.choice((0.88, 0.9, 0.92)), metric_name="test_error", lower_is_better=True, wall_s=2.0,
        device="cpu", steps=20, error="out of memory" if status == "failed" else None,
        curve=[{"step": 10, "train_loss": 1.0, "metric": 0.9}, {"step": 20, "train_loss": 0.5, "metric": metric}],
    )  # fmt: skip


def _answers(client: TestClient, sweep_id: str) -> dict[str, bytes]:
    paths = {
        "page": f"/sweeps/{sweep_id}",
        "figures.json": f"/sweeps/{sweep_id}/figures.json",
        "analysis": f"/api/sweeps/{sweep_id}/analysis",
    }
    answers = {}
    for name, path in paths.items():
        response = client.get(path)
        assert response.status_code == 200, response.text
        answers[name] = response.content
    return answers


def _reference_analysis(session, sweep_id: str) -> dict[str, Any]:
    """Every trial read one at a time through the ORM, analysed record by record."""
    session.rollback()
    columns = [getattr(Trial, name) for name in repo.TRIAL_FRAME_COLUMNS]
    rows = session.execute(sa.select(*columns).where(Trial.sweep_id == sweep_id).order_by(Trial.id)).all()
    records = [row._asdict() for row in rows]
    session.rollback()
    return json_safe(analyze_sweep(records).to_dict())


def test_answers_after_each_change_equal_a_fresh_computation(client, session, settings, submit):
    sweep_id = submit({**SPEC})["id"]
    rng = random.Random(18)
    items = [
        {"task": task, "optimizer": name, "label": name, "lr": lr, "seed": seed, "budget": "smoke"}
        for seed in SPEC["seeds"]
        for task in SPEC["tasks"]
        for name in SPEC["optimizers"]
        for lr in SPEC["lrs"]
    ]
    rows = repo.add_trials(session, sweep_id=sweep_id, trials=items)
    pending = rows[60:]
    for row in rows[:60]:
        _finish(session, row.id, rng, lr=row.lr)
    _answers(client, sweep_id)  # computed and cached for this version

    point = [{"step": 30, "metric": 0.4}]
    changes = [
        ("new result", lambda: _finish(session, pending[0].id, rng, lr=pending[0].lr)),
        ("new point", lambda: repo.add_metric_points(session, trial_id=rows[0].id, points=point)),
        ("new result at a diverging lr", lambda: _finish(session, pending[-1].id, rng, lr=pending[-1].lr)),
        ("trial started", lambda: repo.mark_trial_running(session, trial_id=pending[1].id, attempt=1)),
        ("two more results", lambda: [_finish(session, row.id, rng, lr=row.lr) for row in pending[2:4]]),
    ]  # fmt: skip
    for what, change in changes:
        change()
        incremental = _answers(client, sweep_id)
        with TestClient(create_app(settings)) as fresh:
            scratch = _answers(fresh, sweep_id)
        for name in scratch:
            assert incremental[name] == scratch[name], f"{name} after {what}"
        analysis = json.loads(incremental["analysis"])
        reference = _reference_analysis(session, sweep_id)
        assert {key: analysis[key] for key in reference} == reference, what
    assert json.loads(incremental["analysis"])["finished_trials"] == 64
