"""Cancelling a sweep whose worker is dead (issue 19): the cancel ends it at once, in the API call, with its
unfinished trials cancelled; a sweep whose worker still renews its lease keeps the cooperative cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from nero_study.store import repo
from nero_study.store.models import utc_now

AUTH = {"Authorization": "Bearer test-token"}


def hold(session: Session, sweep_id: str, *, owner: str, lease_left_s: float) -> list[int]:
    """Claim the sweep as ``owner`` with ``lease_left_s`` seconds of lease left (negative: expired), and give it
    three trials as a worker would have left them: one finished, one running, one pending."""
    lease = 30.0
    claimed = repo.claim_next_sweep(
        session, owner=owner, lease_seconds=lease, now=utc_now() - timedelta(seconds=lease - lease_left_s)
    )
    assert claimed is not None and claimed.id == sweep_id
    rows = repo.add_trials(
        session,
        sweep_id=sweep_id,
        trials=[{"task": "digits-mlp", "optimizer": "nero", "label": "nero", "lr": lr, "seed": 0, "budget": "smoke"}
                for lr in (0.001, 0.01, 0.1)],
    )
    finished, running, _ = (row.id for row in rows)
    repo.mark_trial_running(session, trial_id=finished, attempt=claimed.attempts)
    repo.finish_trial(session, trial_id=finished, status="succeeded", metric=0.2, attempt=claimed.attempts)
    repo.mark_trial_running(session, trial_id=running, attempt=claimed.attempts)
    return [row.id for row in rows]


def statuses(client: TestClient, sweep_id: str) -> list[str]:
    items = client.get(f"/api/sweeps/{sweep_id}/trials", params={"limit": 100}).json()["data"]
    return [item["status"] for item in sorted(items, key=lambda item: item["id"])]


def test_cancelling_a_sweep_whose_lease_expired_ends_it_at_once(
    client: TestClient, submit: Callable[..., dict[str, Any]], session: Session
) -> None:
    sweep = submit()
    hold(session, sweep["id"], owner="dead-worker", lease_left_s=-1)  # the worker died; nobody renews the lease

    response = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert statuses(client, sweep["id"]) == ["succeeded", "cancelled", "cancelled"]  # the result is kept
    stored = repo.get_sweep(session, sweep_id=sweep["id"])
    assert stored.lease_owner is None and stored.lease_expires_at is None
    assert repo.claim_next_sweep(session, owner="another-worker", lease_seconds=30) is None  # nothing to take over
    again = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_sweep_with_a_live_lease_keeps_the_cooperative_cancel(
    client: TestClient, submit: Callable[..., dict[str, Any]], session: Session
) -> None:
    sweep = submit()
    hold(session, sweep["id"], owner="live-worker", lease_left_s=60)

    response = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)

    body = response.json()
    assert response.status_code == 200 and body["status"] == "running" and body["cancel_requested"] is True
    assert statuses(client, sweep["id"]) == ["succeeded", "running", "pending"]  # its worker stops them
    assert repo.is_cancel_requested(session, sweep_id=sweep["id"])
    assert repo.get_sweep(session, sweep_id=sweep["id"]).lease_owner == "live-worker"
