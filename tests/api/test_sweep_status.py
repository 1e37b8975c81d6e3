"""A sweep's status means what it says (issue 19): ``succeeded`` only when none of its trials failed; a sweep
that ran to its end with failed trials is ``trials_failed`` in the store, the API, the page and the report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from nero_study.store import repo


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ({("nero", 0.01): ("succeeded", 0.1), ("adam", 0.01): ("diverged", float("nan"))}, "succeeded"),
        ({("nero", 0.01): ("succeeded", 0.1), ("adam", 0.01): ("failed", float("nan"))}, "trials_failed"),
        ({("nero", 0.01): ("failed", float("nan")), ("adam", 0.01): ("failed", float("nan"))}, "trials_failed"),
    ],
    ids=["diverged-is-an-outcome", "one-failed", "all-failed"],
)
def test_a_sweep_with_failed_trials_does_not_say_succeeded(
    client: TestClient,
    session: Session,
    submit: Callable[..., dict[str, Any]],
    finished_trials: Callable[..., Any],
    outcomes: dict,
    expected: str,
) -> None:
    sweep = submit()
    repo.claim_next_sweep(session, owner="w", lease_seconds=30)
    finished_trials(sweep["id"], outcomes)
    assert repo.finish_sweep(session, sweep_id=sweep["id"], owner="w", status="succeeded")

    shown = client.get(f"/api/sweeps/{sweep['id']}").json()
    assert shown["status"] == expected
    failed = sum(status == "failed" for status, _ in outcomes.values())
    assert shown["error"] == (f"{failed} trial(s) failed; see each trial's error" if failed else None)
    assert [s["id"] for s in client.get("/api/sweeps", params={"status": expected}).json()["data"]] == [sweep["id"]]
    page = client.get(f"/sweeps/{sweep['id']}").text
    assert f'<span class="badge status-{expected}">{expected}</span>' in page
    cancel = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers={"Authorization": "Bearer test-token"})
    assert cancel.status_code == 409


def test_the_report_shows_the_status(
    session: Session, submit: Callable[..., dict[str, Any]], finished_trials: Callable[..., Any], database_url: str
) -> None:
    from typer.testing import CliRunner

    from nero_study.cli import app

    sweep = submit()
    repo.claim_next_sweep(session, owner="w", lease_seconds=30)
    finished_trials(sweep["id"], {("nero", 0.01): ("succeeded", 0.1), ("adam", 0.01): ("failed", float("nan"))})
    repo.finish_sweep(session, sweep_id=sweep["id"], owner="w", status="succeeded")

    result = CliRunner().invoke(app, ["report", sweep["id"], "--db", database_url])
    assert result.exit_code == 0, result.output
    assert "status trials_failed" in result.output and "1 trial(s) failed" in result.output
    result = CliRunner().invoke(app, ["report", sweep["id"], "--db", database_url, "--format", "json"])
    assert '"status": "trials_failed"' in result.output


def test_slot_use_is_shown_by_the_api_the_page_and_the_status_line(
    client: TestClient, session: Session, submit: Callable[..., dict[str, Any]], finished_trials: Callable[..., Any]
) -> None:
    from nero_study.client import progress_line

    sweep = submit()
    shown = client.get(f"/api/sweeps/{sweep['id']}").json()
    assert (shown["busy_slot_seconds"], shown["slot_seconds"], shown["slot_utilisation"]) == (None, None, None)
    assert "slot use" not in client.get(f"/sweeps/{sweep['id']}").text  # not measured: not shown
    repo.claim_next_sweep(session, owner="w", lease_seconds=30)
    finished_trials(sweep["id"], {("nero", 0.01): ("succeeded", 0.1), ("adam", 0.01): ("succeeded", 0.2)})
    assert repo.finish_sweep(session, sweep_id=sweep["id"], owner="w", status="succeeded", slot_use=(45.0, 60.0))

    shown = client.get(f"/api/sweeps/{sweep['id']}").json()
    assert (shown["busy_slot_seconds"], shown["slot_seconds"], shown["slot_utilisation"]) == (45.0, 60.0, 0.75)
    page = client.get(f"/sweeps/{sweep['id']}").text
    assert "<b>slot use</b> 75% <span class=\"muted\">(45 of 60 slot-s)</span>" in page
    assert progress_line(shown).endswith("; slot use 75%")


def test_the_page_says_what_auto_execution_runs_per_task_and_why(
    client: TestClient, submit: Callable[..., dict[str, Any]], quick_spec: dict[str, Any]
) -> None:
    """``execution: auto`` (the default) is explained per task on the page, by the engine's rule; a sweep that
    chose its mode itself gets no such line."""
    sweep = submit({**quick_spec, "tasks": ["digits-mlp", "digits-resnet"]})
    page = client.get(f"/sweeps/{sweep['id']}").text
    assert "<b>auto</b> digits-mlp: batched <span class=\"muted\">(the trials of nero, adam share stacked runs" in page
    assert "digits-resnet: packed <span class=\"muted\">(task &#39;digits-resnet&#39; does not declare batched" in page
    chosen = submit({**quick_spec, "execution": "packed"})
    assert "<b>auto</b>" not in client.get(f"/sweeps/{chosen['id']}").text

