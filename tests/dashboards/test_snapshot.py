"""A sweep read from the store through the repo: the snapshot, its version token, list rows, trial records."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pandas as pd
from sqlalchemy.orm import Session

from dashboards.snapshot import (
    TRIAL_FIELDS,
    load_sweep_snapshot,
    safe_analysis,
    sweep_list_item,
    sweep_version,
    trial_record,
    trial_version,
)
from nero_study.store import repo
from nero_study.vocabulary import TRIAL_STATUSES


def test_load_sweep_snapshot(session: Session, make_sweep: Callable[..., str], known_outcomes: tuple) -> None:
    sweep_id = make_sweep("snap", known_outcomes[:4], status="running", pending=[("digits-mlp", "nero", 0.1, 0)])
    snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    assert snapshot is not None and snapshot.name == "snap" and snapshot.status == "running"
    assert snapshot.counts == dict.fromkeys(TRIAL_STATUSES, 0) | {"succeeded": 4, "pending": 1}
    assert len(snapshot.trials) == 5 and snapshot.analysis_error is None
    assert snapshot.labels == ("nero", "adam")  # the spec's order, though only nero has run
    assert not snapshot.finished and snapshot.version == sweep_version("running", snapshot.counts)
    # One curve: nero's best lr on digits-mlp (0.01, where seeds 0 and 1 scored 0.2 and 0.4), seed 0.
    assert [(trial["label"], trial["lr"], trial["seed"]) for trial, _ in snapshot.curves] == [("nero", 0.01, 0)]
    assert len(snapshot.curves[0][1]) == 3  # the three points conftest stores per trial
    assert snapshot.progress.done == 4 and snapshot.progress.total == 32  # 32 planned by the spec
    assert load_sweep_snapshot(session, sweep_id=sweep_id, with_curves=False).curves == ()
    assert load_sweep_snapshot(session, sweep_id="nope") is None
    repo.finish_sweep(session, sweep_id=sweep_id, owner="tests", status="cancelled")
    assert load_sweep_snapshot(session, sweep_id=sweep_id).finished


def test_sweep_version_changes_with_the_status_and_the_counts() -> None:
    base = sweep_version("running", {"succeeded": 2, "pending": 3})
    assert base == "running:pending=3,succeeded=2"
    assert sweep_version("running", {"pending": 3, "succeeded": 2}) == base  # whatever the order
    assert sweep_version("running", {"succeeded": 3, "pending": 2}) != base
    assert sweep_version("succeeded", {"succeeded": 2, "pending": 3}) != base


def test_trial_version_and_record() -> None:
    trial = {"id": 4, "status": "running", "params_key": "abc", "task": "digits-mlp"}
    assert trial_version(trial, [{}, {}]) == "running:2"
    record = trial_record(trial)
    assert set(record) == set(TRIAL_FIELDS) and "params_key" not in record
    assert (record["id"], record["task"], record["lr"]) == (4, "digits-mlp", None)
    assert trial_record(SimpleNamespace(id=4, task="digits-mlp")) == record | {"status": None}


def test_sweep_list_item() -> None:
    sweep = SimpleNamespace(
        id="s1", name="n", status="running", spec={"tasks": ["digits-mlp"], "optimizers": ["nero", "adam"]}
    )
    item = sweep_list_item(sweep, counts={"succeeded": 1, "running": 1}, planned=4)
    assert (item.tasks, item.labels) == (("digits-mlp",), ("nero", "adam"))
    assert (item.progress.total, item.progress.done) == (4, 1) and item.created_at is None


def test_safe_analysis_says_why_trials_cannot_be_analysed() -> None:
    analysis, error = safe_analysis(pd.DataFrame([{"task": "digits-mlp"}]))
    assert analysis.per_optimizer == () and error
