"""``nero_study.client``: the Python client and the CLI's submit/status logic, against the real app in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from nero_study import client as client_module
from nero_study.client import ApiError, NeroStudyClient, progress_line
from nero_study.store import repo

SPEC: dict[str, Any] = {"tasks": ["digits-mlp"], "optimizers": ["nero", "adam"], "lrs": [0.01, 0.1], "budget": "smoke"}


@pytest.fixture
def api(client: TestClient) -> NeroStudyClient:
    return NeroStudyClient("http://testserver", token="test-token", http_client=client)


def test_submit_get_list_and_cancel(api: NeroStudyClient) -> None:
    sweep = api.submit(SPEC, idempotency_key="client-1")
    again = api.submit(SPEC, idempotency_key="client-1")

    assert sweep["status"] == "queued" and again["id"] == sweep["id"]
    assert api.get_sweep(sweep["id"])["planned_trials"] == 5  # adam's default 0.001 joins its grid
    assert [s["id"] for s in api.list_sweeps()["data"]] == [sweep["id"]]
    assert api.cancel(sweep["id"])["status"] == "cancelled"
    assert api.wait(sweep["id"], timeout=1, poll=0.01)["status"] == "cancelled"


def test_errors_carry_the_api_message(api: NeroStudyClient, client: TestClient) -> None:
    with pytest.raises(ApiError) as invalid:
        api.submit({**SPEC, "tasks": ["mnist"]})
    with pytest.raises(ApiError) as missing:
        api.get_sweep("does-not-exist")
    anonymous = NeroStudyClient("http://testserver", http_client=client)
    with pytest.raises(ApiError) as unauthorized:
        anonymous.submit(SPEC)

    assert invalid.value.status_code == 422
    assert invalid.value.errors[0]["field"] == "tasks[0]"
    assert "valid: digits-mlp" in str(invalid.value)
    assert missing.value.status_code == 404
    assert unauthorized.value.status_code == 401


def test_wait_times_out_on_a_queued_sweep(api: NeroStudyClient) -> None:
    sweep = api.submit(SPEC)
    seen: list[str] = []

    with pytest.raises(TimeoutError, match="still queued"):
        api.wait(sweep["id"], timeout=0.05, poll=0.01, on_update=lambda s: seen.append(s["status"]))

    assert seen and set(seen) == {"queued"}


def test_trials_analysis_and_export(
    api: NeroStudyClient, session: Session, finished_trials: Callable[..., dict], tmp_path: Path
) -> None:
    sweep = api.submit(SPEC)
    finished_trials(sweep["id"], {("nero", 0.01): ("succeeded", 0.2), ("adam", 0.01): ("diverged", float("nan"))})

    trials = api.list_trials(sweep["id"], status="diverged")
    analysis = api.analysis(sweep["id"])
    path = api.export(sweep["id"], tmp_path / "trials.csv")

    assert [t["label"] for t in trials["data"]] == ["adam"]
    assert api.get_trial(trials["data"][0]["id"])["curve"][0]["metric"] == 0.9
    assert {s["label"] for s in analysis["per_optimizer"]} == {"nero", "adam"}
    assert len(path.read_text().splitlines()) == 3
    assert {t["name"] for t in api.tasks()} >= {"digits-mlp"}
    assert api.health()["status"] == "ok"


def test_cli_submit_validates_the_file_then_submits_it(client: TestClient, tmp_path: Path) -> None:
    spec_file = tmp_path / "sweep.yaml"
    spec_file.write_text("tasks: [digits-mlp]\noptimizers: [nero]\nlrs: {min: 1.0e-3, max: 1.0e-1}\nbudget: smoke\n")

    sweep = client_module.submit(spec_file, token="test-token", http_client=client)
    shown = client_module.status(sweep["id"], http_client=client)
    listed = client_module.status(http_client=client)

    assert sweep["spec"]["lrs"] == {"min": 0.001, "max": 0.1, "points_per_decade": 1}
    assert [s["id"] for s in shown] == [s["id"] for s in listed] == [sweep["id"]]
    assert progress_line(shown[0]).startswith("queued  0/3 done")


def test_cli_submit_reports_a_bad_file_before_sending(tmp_path: Path) -> None:
    spec_file = tmp_path / "sweep.json"
    spec_file.write_text(json.dumps({**SPEC, "protocol": "bayes"}))

    with pytest.raises(ValueError, match="protocol"):
        client_module.submit(spec_file, url="http://127.0.0.1:9", token="t")


def test_progress_line_counts_finished_trials() -> None:
    sweep = {
        "status": "running",
        "planned_trials": 10,
        "counts": {"succeeded": 3, "diverged": 1, "failed": 0, "running": 2, "pending": 4, "cancelled": 0},
    }

    assert progress_line(sweep) == "running  4/10 done (3 succeeded, 1 diverged, 0 failed), 2 running"


def test_default_token_prefers_the_client_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERO_STUDY_API_TOKENS", "server-1,server-2")
    monkeypatch.delenv("NERO_STUDY_TOKEN", raising=False)
    assert client_module.default_token() == "server-1"
    monkeypatch.setenv("NERO_STUDY_TOKEN", "mine")
    assert client_module.default_token() == "mine"


def test_store_token_round_trip_through_the_client(client: TestClient, session: Session) -> None:
    _, clear = repo.create_token(session, name="laptop")

    sweep = NeroStudyClient("http://testserver", token=clear, http_client=client).submit(SPEC)

    assert sweep["status"] == "queued"


def test_import_results_stores_a_sweep_or_names_the_bad_row(api: NeroStudyClient) -> None:
    csv = "task,optimizer,lr,status,metric\ndigits-mlp,nero,0.01,succeeded,0.05\ndigits-mlp,sgd,0.1,succeeded,0.1\n"
    sweep = api.import_results(csv, name="elsewhere")
    assert (sweep["name"], sweep["status"]) == ("elsewhere", "succeeded")
    assert api.analysis(sweep["id"])["profiles"]["tuned"]["ratios"]["sgd"]["digits-mlp"] == pytest.approx(2.0)
    with pytest.raises(ApiError) as bad:
        api.import_results(csv + "digits-mlp,adam,0.001,oops,0.1\n")
    assert bad.value.status_code == 422 and "row 4, column status" in str(bad.value)
