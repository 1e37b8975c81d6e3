"""Submitting, listing, reading and cancelling sweeps over HTTP; auth; input errors (422/413)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from nero_study.settings import Settings
from nero_study.store import repo
from nero_study.tasks.registry import TASKS

TOKEN = "test-token"  # the token of the ``settings`` fixture (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Submit = Callable[..., dict[str, Any]]
QUICK_SPEC = {
    "name": "quick",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.001, 0.01, 0.1],
    "seeds": [0],
    "budget": "smoke",
}


def test_submit_queues_the_sweep_with_its_planned_trial_count(client: TestClient) -> None:
    response = client.post("/api/sweeps", json=QUICK_SPEC, headers=AUTH)

    assert response.status_code == 201
    sweep = response.json()
    assert sweep["status"] == "queued"
    assert sweep["name"] == "quick"
    assert response.headers["location"] == f"/api/sweeps/{sweep['id']}"
    # 3 lrs + adam's default 0.001 (already in) for adam; nero's default 0.01 (already in): 2 x 3 x 1 seed.
    assert sweep["planned_trials"] == 6
    assert sweep["counts"]["pending"] == 0 and sweep["trials_total"] == 0
    assert sweep["spec"]["tasks"] == ["digits-mlp"]
    assert [v["label"] for v in sweep["spec"]["optimizers"]] == ["nero", "adam"]

    again = client.get(f"/api/sweeps/{sweep['id']}")
    assert again.status_code == 200
    assert again.json()["id"] == sweep["id"]
    assert again.json()["created_at"] == sweep["created_at"]


def test_planned_count_is_stored_at_submission_and_listed(client: TestClient, session: Session) -> None:
    sweep = client.post("/api/sweeps", json=QUICK_SPEC, headers=AUTH).json()

    assert repo.get_sweep(session, sweep_id=sweep["id"]).planned_trials == 6
    listed = client.get("/api/sweeps").json()["data"]
    assert [(s["id"], s["planned_trials"]) for s in listed] == [(sweep["id"], 6)]


def test_sweep_stored_without_a_planned_count_is_counted_from_its_spec(client: TestClient, session: Session) -> None:
    # A sweep written before migration 0002 (or by a tool that does not count): NULL planned_trials.
    old = repo.create_sweep(session, spec={**QUICK_SPEC, "lrs": [0.1, 1.0]}, name="old")[0]
    assert old.planned_trials is None

    assert client.get(f"/api/sweeps/{old.id}").json()["planned_trials"] == 6  # 2 lrs + each default lr
    assert client.get("/api/sweeps").json()["data"][0]["planned_trials"] == 6


def test_unnamed_sweep_gets_a_descriptive_name(client: TestClient, submit: Submit) -> None:
    spec = {key: value for key, value in QUICK_SPEC.items() if key != "name"}
    assert submit(spec)["name"] == "digits-mlp x nero, adam (grid)"


def test_idempotency_key_returns_the_same_sweep_with_200(client: TestClient) -> None:
    first = client.post("/api/sweeps", json=QUICK_SPEC, headers={**AUTH, "Idempotency-Key": "run-42"})
    second = client.post("/api/sweeps", json=QUICK_SPEC, headers={**AUTH, "Idempotency-Key": "run-42"})
    other = client.post("/api/sweeps", json=QUICK_SPEC, headers={**AUTH, "Idempotency-Key": "run-43"})

    assert (first.status_code, second.status_code, other.status_code) == (201, 200, 201)
    assert second.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    assert client.get("/api/sweeps").json()["total"] == 2


def test_idempotency_key_reused_with_another_spec_is_a_conflict(client: TestClient, submit: Submit) -> None:
    submit(QUICK_SPEC, **{"Idempotency-Key": "k1"})
    changed = {**QUICK_SPEC, "seeds": [0, 1]}

    response = client.post("/api/sweeps", json=changed, headers={**AUTH, "Idempotency-Key": "k1"})

    assert response.status_code == 409
    assert "k1" in response.json()["detail"]
    assert client.get("/api/sweeps").json()["total"] == 1


def test_listing_pages_newest_first_with_total(client: TestClient, submit: Submit) -> None:
    ids = [submit({**QUICK_SPEC, "name": f"sweep {i}"})["id"] for i in range(5)]

    first = client.get("/api/sweeps", params={"limit": 2}).json()
    rest = client.get("/api/sweeps", params={"offset": 2, "limit": 10}).json()

    assert first["total"] == rest["total"] == 5
    assert (first["offset"], first["limit"]) == (0, 2)
    listed = [s["id"] for s in first["data"]] + [s["id"] for s in rest["data"]]
    assert listed == ids[::-1]
    assert client.get("/api/sweeps", params={"offset": 5}).json()["data"] == []


def test_listing_filters_by_status(client: TestClient, submit: Submit) -> None:
    kept = submit()["id"]
    cancelled = submit({**QUICK_SPEC, "name": "to cancel"})["id"]
    assert client.post(f"/api/sweeps/{cancelled}/cancel", headers=AUTH).status_code == 200

    queued = client.get("/api/sweeps", params={"status": "queued"}).json()
    gone = client.get("/api/sweeps", params={"status": "cancelled"}).json()

    assert [s["id"] for s in queued["data"]] == [kept] and queued["total"] == 1
    assert [s["id"] for s in gone["data"]] == [cancelled]


@pytest.mark.parametrize(
    ("params", "field", "valid"),
    [
        ({"status": "done"}, "status", "'queued', 'running', 'succeeded', 'trials_failed', 'failed' or 'cancelled'"),
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 100000}, "limit", "less than or equal to 500"),
        ({"offset": -1}, "offset", "greater than or equal to 0"),
    ],
)
def test_listing_rejects_bad_query_naming_the_field(
    client: TestClient, params: dict[str, object], field: str, valid: str
) -> None:
    response = client.get("/api/sweeps", params=params)

    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == field
    assert body["errors"][0]["location"] == "query"
    assert valid in body["errors"][0]["message"]
    assert body["detail"].startswith(f"{field}: ")


def test_unknown_ids_are_404(client: TestClient) -> None:
    for path in (
        "/api/sweeps/nope",
        "/api/sweeps/nope/trials",
        "/api/sweeps/nope/analysis",
        "/api/sweeps/nope/export.csv",
        "/api/sweeps/nope/export.parquet",
        "/api/trials/12345",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "not found" in response.json()["detail"]
    assert client.post("/api/sweeps/nope/cancel", headers=AUTH).status_code == 404


def test_cancel_a_queued_sweep_cancels_it_at_once(client: TestClient, submit: Submit) -> None:
    sweep = submit()

    response = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested"] is True
    assert response.json()["finished_at"] is not None
    # Cancelling again is harmless.
    assert client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH).json()["status"] == "cancelled"


def test_cancel_a_running_sweep_asks_its_worker(client: TestClient, submit: Submit, session: Session) -> None:
    sweep = submit()
    claimed = repo.claim_next_sweep(session, owner="worker-1", lease_seconds=30)
    assert claimed is not None and claimed.id == sweep["id"]

    response = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)

    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert response.json()["cancel_requested"] is True
    assert repo.is_cancel_requested(session, sweep_id=sweep["id"])


def test_cancel_a_finished_sweep_is_a_conflict(client: TestClient, submit: Submit, session: Session) -> None:
    sweep = submit()
    repo.claim_next_sweep(session, owner="worker-1", lease_seconds=30)
    assert repo.finish_sweep(session, sweep_id=sweep["id"], owner="worker-1", status="succeeded")

    response = client.post(f"/api/sweeps/{sweep['id']}/cancel", headers=AUTH)

    assert response.status_code == 409
    assert "succeeded" in response.json()["detail"]


def test_sweep_shows_worker_progress_timestamps_and_error(client: TestClient, submit: Submit, session: Session) -> None:
    sweep = submit()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    repo.claim_next_sweep(session, owner="w", lease_seconds=30, execution="packed", now=now)
    rows = repo.add_trials(
        session,
        sweep_id=sweep["id"],
        trials=[{"task": "digits-mlp", "optimizer": "nero", "lr": lr, "seed": 0} for lr in (0.001, 0.01, 0.1)],
    )
    repo.finish_trial(session, trial_id=rows[0].id, status="succeeded", metric=0.1)
    repo.finish_trial(session, trial_id=rows[1].id, status="diverged", metric=float("nan"))
    repo.finish_sweep(
        session,
        sweep_id=sweep["id"],
        owner="w",
        status="failed",
        error="worker ran out of memory",
        now=now + timedelta(minutes=5),
    )

    shown = client.get(f"/api/sweeps/{sweep['id']}").json()

    assert shown["status"] == "failed"
    # A failed sweep runs nothing more: its unfinished trial says so (cancelled), its finished ones are kept.
    assert shown["counts"] == {"pending": 0, "running": 0, "succeeded": 1, "diverged": 1, "failed": 0, "cancelled": 1}
    assert shown["trials_total"] == 3
    assert shown["started_at"] == "2026-01-02T03:04:05Z"
    assert shown["finished_at"] == "2026-01-02T03:09:05Z"
    assert shown["error"] == "worker ran out of memory"
    assert shown["execution"] == "packed"
    assert shown["attempts"] == 1


# --- auth ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("post", "/api/sweeps"), ("post", "/api/sweeps/{id}/cancel")])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic dGVzdDp0ZXN0", "Bearer "])
def test_writes_need_a_valid_bearer_token(
    client: TestClient, submit: Submit, method: str, path: str, authorization: str | None
) -> None:
    sweep_id = submit()["id"]
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = getattr(client, method)(path.format(id=sweep_id), json=QUICK_SPEC, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "wrong-token" not in response.text
    assert client.get(f"/api/sweeps/{sweep_id}").json()["status"] == "queued"
    assert client.get("/api/sweeps").json()["total"] == 1


def test_a_token_created_in_the_store_works_and_a_revoked_one_does_not(client: TestClient, session: Session) -> None:
    row, clear = repo.create_token(session, name="ci")
    headers = {"Authorization": f"Bearer {clear}"}

    assert client.post("/api/sweeps", json=QUICK_SPEC, headers=headers).status_code == 201
    repo.revoke_token(session, token_id=row.id)
    assert client.post("/api/sweeps", json=QUICK_SPEC, headers=headers).status_code == 401


def test_any_of_several_settings_tokens_is_accepted(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, api_tokens=" first , second "))
    with TestClient(app) as client:
        for token, expected in (("first", 201), ("second", 201), ("first , second", 401), ("", 401)):
            response = client.post("/api/sweeps", json=QUICK_SPEC, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == expected, token


def test_reads_are_open_by_default_and_closed_when_settings_say_so(database_url: str) -> None:
    with TestClient(create_app(Settings(database_url=database_url, api_tokens=TOKEN))) as client:
        assert client.get("/api/sweeps").status_code == 200
        assert client.get("/api/tasks").status_code == 200

    closed = create_app(
        Settings(database_url=database_url, api_tokens=TOKEN, require_token_for_reads=True, health_min_workers=0)
    )
    with TestClient(closed) as client:
        for path in ("/api/sweeps", "/api/tasks", "/api/optimizers", "/api/trials/1"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/api/sweeps", headers=AUTH).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open


# --- bad input ----------------------------------------------------------------------------------------


def _error(client: TestClient, body: object) -> dict[str, object]:
    response = client.post(
        "/api/sweeps", content=json.dumps(body), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    return response.json()


def test_unknown_task_names_the_field_and_lists_the_valid_tasks(client: TestClient) -> None:
    body = _error(client, {**QUICK_SPEC, "tasks": ["digits-mlp", "cifar100"]})

    error = body["errors"][0]
    assert error["field"] == "tasks[1]"
    assert error["location"] == "body"
    assert "cifar100" in error["message"]
    for name in TASKS:
        assert name in error["message"]
    assert body["detail"].startswith("tasks[1]: Unknown task 'cifar100'")
    assert client.get("/api/sweeps").json()["total"] == 0


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"optimizers": ["nero", "adamw"]}, "optimizers[1].name", "valid: nero, sgd, adam, lamb"),
        ({"protocol": "random"}, "protocol", "'grid', 'paper', 'tpe' or 'bracket'"),
        ({"budget": "huge"}, "budget", "'smoke', 'proxy' or 'paper'"),
        ({"seeds": [0, -1]}, "seeds", "valid: integers from 0 to 2147483647"),
        ({"lrs": [0.1, -1.0]}, "lrs", "positive finite number"),
        ({"lrs": {"min": 1.0, "max": 0.1}}, "lrs", "must not be below min"),
        ({"colour": "blue"}, "", "Unknown field(s) 'colour'; valid: name, tasks"),
        ({"optimizers": [{"name": "adam", "settings": {"momentum": 0.9}}]}, "optimizers", "valid: betas, eps"),
    ],
)
def test_invalid_spec_fields_are_named_with_valid_values(
    client: TestClient, change: dict[str, object], field: str, expected: str
) -> None:
    body = _error(client, {**QUICK_SPEC, **change})

    messages = [e["message"] for e in body["errors"] if e["field"] == field or e["field"].startswith(f"{field}.")]
    assert messages, body
    assert any(expected in message for message in messages), messages
    assert "Value error," not in body["detail"]


def test_missing_required_fields_are_named(client: TestClient) -> None:
    body = _error(client, {"tasks": ["digits-mlp"]})

    fields = {error["field"] for error in body["errors"]}
    assert {"optimizers", "lrs"} <= fields


def test_sweep_over_the_trial_limit_is_refused_with_the_count(client: TestClient) -> None:
    # 2 optimisers x 101 lrs x 1 seed = 202 planned trials > the test limit of 200.
    spec = {**QUICK_SPEC, "lrs": {"min": 1e-4, "max": 1.0, "points_per_decade": 25}}

    body = _error(client, spec)

    assert "over the limit of 200" in body["detail"]
    assert client.get("/api/sweeps").json()["total"] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "body is empty"),
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [NaN]}', "NaN is not a number JSON allows"),
        (b'{"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [1e999]}', "out of range"),
        (b"\xff\xfe\x00garbage", "Invalid JSON"),
        (b'{"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.1], "name": "a\\u0000b"}', "NUL characters"),
        (b'{"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.1], "name": "\\ud800"}', "unpaired surrogates"),
        (b"[" * 100_000 + b"]" * 100_000, "Invalid JSON"),
    ],
)
def test_malformed_bodies_are_422_not_500(client: TestClient, content: bytes, message: str, settings: Settings) -> None:
    big = create_app(settings.model_copy(update={"max_spec_bytes": 1_000_000}))
    with TestClient(big) as roomy:
        response = roomy.post("/api/sweeps", content=content, headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_spec_larger_than_the_limit_is_413(client: TestClient) -> None:
    spec = {**QUICK_SPEC, "name": "x" * 100, "task_options": {"digits-mlp": {"padding": "y" * 30_000}}}

    response = client.post("/api/sweeps", json=spec, headers=AUTH)

    assert response.status_code == 413
    assert "20000 bytes" in response.json()["detail"]


def test_streamed_body_larger_than_the_limit_is_413(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit must hold while reading
        yield b'{"name": "'
        for _ in range(30):
            yield b"z" * 1000
        yield b'"}'

    response = client.post("/api/sweeps", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})

    assert response.status_code == 413


def test_bad_idempotency_key_is_422(client: TestClient) -> None:
    response = client.post("/api/sweeps", json=QUICK_SPEC, headers={**AUTH, "Idempotency-Key": "k" * 201})

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "idempotency-key"


@pytest.mark.parametrize("sweep_id", ["a%00b", "semi;colon", "x" * 65])
def test_malformed_sweep_ids_are_422(client: TestClient, sweep_id: str) -> None:
    response = client.get(f"/api/sweeps/{sweep_id}")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "sweep_id"


IMPORTED_CSV = """task,optimizer,lr,seed,status,metric,metric_name,lower_is_better,chance
translation,nero,0.01,0,succeeded,11.35,perplexity,true,30000
translation,sgd,0.1,0,succeeded,92.4,perplexity,true,30000
"""


def test_import_stores_a_finished_sweep_with_its_analysis(client: TestClient) -> None:
    response = client.post(
        "/api/sweeps/import", params={"name": "paper"}, content=IMPORTED_CSV,
        headers={**AUTH, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["status"] == "succeeded" and sweep["name"] == "paper"
    assert response.headers["Location"] == f"/api/sweeps/{sweep['id']}"
    analysis = client.get(f"/api/sweeps/{sweep['id']}/analysis").json()
    assert analysis["profiles"]["tuned"]["ratios"]["sgd"]["translation"] == pytest.approx(92.4 / 11.35, rel=1e-12)
    # The same pages apply: the sweep page and /compare beside another sweep.
    page = client.get(f"/sweeps/{sweep['id']}")
    assert page.status_code == 200 and 'data-task="translation"' in page.text
    other = client.post("/api/sweeps/import", content=IMPORTED_CSV, headers={**AUTH, "Content-Type": "text/csv"})
    compare = client.get("/compare", params={"sweeps": f"{sweep['id']},{other.json()['id']}"})
    assert compare.status_code == 200, compare.text[:500]


def test_import_needs_a_token_and_a_good_file(client: TestClient) -> None:
    assert client.post("/api/sweeps/import", content=IMPORTED_CSV).status_code == 401
    before = client.get("/api/sweeps").json()["total"]
    bad = IMPORTED_CSV + "translation,adam,0.001,0,exploded,1,perplexity,true,30000\n"
    response = client.post("/api/sweeps/import", content=bad, headers={**AUTH, "Content-Type": "text/csv"})
    assert response.status_code == 422
    assert "row 4, column status: 'exploded'; valid: succeeded, diverged, failed" in response.json()["detail"]
    assert client.get("/api/sweeps").json()["total"] == before  # nothing stored


@pytest.mark.parametrize(
    "body",
    ["\r0", "task,optimizer,lr,status\n" + "x" * 200_000 + ",sgd,0.1,succeeded\n"],
    ids=["carriage-return", "field-over-the-csv-limit"],
)
def test_import_of_text_that_is_not_good_csv_is_refused_not_a_server_error(client: TestClient, body: str) -> None:
    before = client.get("/api/sweeps").json()["total"]
    response = client.post("/api/sweeps/import", content=body, headers={**AUTH, "Content-Type": "text/csv"})
    assert response.status_code == 422, response.text
    assert "row" in response.json()["detail"]
    assert client.get("/api/sweeps").json()["total"] == before
