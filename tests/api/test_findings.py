"""``GET /api/findings`` over HTTP on a real SQLite store, with the hand-made sweeps of
tests/study/test_study_findings.py (sweep A ``verdict``: smoke budget, paper preset; sweep B ``library``: proxy
budget, library preset; their right answers are in that module's docstring)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from nero_study.settings import Settings
from nero_study.store import repo
from tests.api.conftest import AUTH, TOKEN
from tests.dashboards.conftest import KNOWN_OUTCOMES, KNOWN_SPEC, store_sweep
from tests.dashboards.test_pages import verdict_outcomes
from tests.study.test_study_findings import A_SPEC, LIBRARY_SPEC, library_outcomes


@pytest.fixture
def two_sweeps(session: Session) -> dict[str, str]:
    """Sweeps A then B, finished (B newer); returns their ids by name."""
    a = store_sweep(session, "verdict", verdict_outcomes(), spec=A_SPEC)
    b = store_sweep(session, "library", library_outcomes(), spec=LIBRARY_SPEC)
    return {"A": a, "B": b}


def rows_of(body: dict[str, Any]) -> dict[tuple[str, str], tuple[str, list[tuple[str, str]]]]:
    """{(task, label): (overall, [(sweep name, status), ...])}"""
    return {
        (row["task"], row["label"]): (row["overall"], [(e["sweep_name"], e["status"]) for e in row["entries"]])
        for row in body["rows"]
    }


def test_two_finished_sweeps_in_one_table(client: TestClient, two_sweeps: dict[str, str]) -> None:
    response = client.get("/api/findings")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["headline"] == "Nero out-of-the-box winner on 1 of 2 tasks across 2 finished sweeps (mixed on 1)."
    assert rows_of(body) == {
        ("digits-mlp", "nero"): ("mixed", [("library", "behind"), ("verdict", "winner")]),
        ("digits-mlp", "adam"): ("mixed", [("library", "winner"), ("verdict", "behind")]),
        ("digits-mlp", "sgd"): ("behind", [("verdict", "behind")]),
        ("digits-mlp", "lamb"): ("winner", [("verdict", "winner")]),
        ("ppo-cartpole", "nero"): ("winner", [("library", "winner")]),
        ("ppo-cartpole", "adam"): ("behind", [("library", "behind")]),
    }
    nero = next(row for row in body["rows"] if (row["task"], row["label"]) == ("digits-mlp", "nero"))
    assert (nero["winner"], nero["behind"], nero["inconclusive"]) == (1, 1, 0)
    library = nero["entries"][0]
    assert library["ootb_regret"] == pytest.approx(0.25)
    assert library["best"] == pytest.approx(0.101) and library["eta_star"] == pytest.approx(0.001)
    assert (library["ootb_seeds"], library["best_seeds"]) == (3, 3)
    assert (library["budget"], library["preset"], library["sweep_status"]) == ("proxy", "library", "succeeded")
    b = two_sweeps["B"]
    assert library["links"] == {
        "page": f"/sweeps/{b}",
        "sweep": f"/api/sweeps/{b}",
        "analysis": f"/api/sweeps/{b}/analysis",
    }
    # The link leads to the same verdict on the sweep's own analysis.
    analysis = client.get(library["links"]["analysis"]).json()
    (task,) = [t for t in analysis["verdict"]["tasks"] if t["task"] == "digits-mlp"]
    (own,) = [o for o in task["optimizers"] if o["label"] == "nero"]
    assert (own["status"], own["ootb_regret"], own["best"]) == ("behind", library["ootb_regret"], library["best"])
    assert [sweep["name"] for sweep in body["sweeps"]] == ["library", "verdict"]
    tallies = {tally["label"]: tally for tally in body["tallies"]}
    assert tallies["nero"] == {"label": "nero", "tasks": 2, "winner": 1, "behind": 0, "mixed": 1, "inconclusive": 0}
    assert body["available_tasks"] == ["digits-mlp", "ppo-cartpole"] and body["note"] is None


ONE_OF_ONE = "Nero out-of-the-box winner on 1 of 1 task across 1 finished sweep."
LIBRARY_ONLY = "Nero out-of-the-box winner on 1 of 2 tasks across 1 finished sweep (behind on 1)."


@pytest.mark.parametrize(
    ("query", "sweeps", "headline"),
    [
        ("budget=smoke", ["verdict"], ONE_OF_ONE),
        ("budget=proxy", ["library"], LIBRARY_ONLY),
        ("preset=library", ["library"], LIBRARY_ONLY),
        ("preset=paper", ["verdict"], ONE_OF_ONE),
        ("task=ppo-cartpole", ["library"], ONE_OF_ONE),
        ("task=digits-mlp&preset=paper", ["verdict"], ONE_OF_ONE),
        ("budget=paper", [], "No finished sweep matches budget paper."),
    ],
)
def test_filters(client: TestClient, two_sweeps: dict[str, str], query: str, sweeps: list[str], headline: str) -> None:
    body = client.get(f"/api/findings?{query}").json()
    assert [sweep["name"] for sweep in body["sweeps"]] == sweeps
    assert {entry["sweep_name"] for row in body["rows"] for entry in row["entries"]} == set(sweeps)
    assert body["headline"] == headline
    filters = dict(part.split("=") for part in query.split("&"))
    assert {key: value for key, value in body["filters"].items() if value is not None} == filters
    if "task" in filters:
        assert {row["task"] for row in body["rows"]} == {filters["task"]}
    if not sweeps:
        assert body["rows"] == [] and body["note"] == "No finished sweep matches budget paper."


def test_an_unknown_budget_or_preset_is_a_422_naming_the_valid_values(client: TestClient, two_sweeps) -> None:
    for query, field, valid in (
        ("budget=tiny", "budget", "'smoke', 'proxy' or 'paper'"),
        ("preset=x", "preset", "'paper' or 'library'"),
    ):
        response = client.get(f"/api/findings?{query}")
        assert response.status_code == 422
        (error,) = response.json()["errors"]
        assert error["field"] == field and error["location"] == "query" and valid in error["message"]


def test_an_unknown_task_is_an_empty_table_naming_the_tasks_with_findings(client: TestClient, two_sweeps) -> None:
    body = client.get("/api/findings?task=digit-mlp").json()
    assert body["rows"] == [] and body["sweeps"] == []
    assert body["note"] == "No finished sweep matches task digit-mlp. Tasks with findings: digits-mlp, ppo-cartpole."


def test_running_and_queued_sweeps_are_left_out(client: TestClient, session: Session, two_sweeps) -> None:
    before = client.get("/api/findings").json()
    store_sweep(session, "cancelled", library_outcomes(), spec={**LIBRARY_SPEC, "budget": "smoke"}, status="cancelled")
    store_sweep(session, "running", library_outcomes()[:6], spec=LIBRARY_SPEC, status="running")
    store_sweep(session, "queued", (), spec=LIBRARY_SPEC, status="queued")
    statuses = {sweep.name: sweep.status for sweep in repo.list_sweeps(session)[0]}
    assert statuses == {
        "verdict": "succeeded",
        "library": "succeeded",
        "cancelled": "cancelled",
        "running": "running",
        "queued": "queued",
    }
    after = client.get("/api/findings").json()
    assert [sweep["name"] for sweep in after["sweeps"]] == ["library", "verdict"]
    assert rows_of(after) == rows_of(before) and after["headline"] == before["headline"]


def test_a_sweep_with_failed_trials_is_shown_with_its_caveat(client: TestClient, session: Session) -> None:
    """The dashboards' known sweep: adam's lr 1 failed at both seeds; the sweep ended ``trials_failed``."""
    store_sweep(session, "known", KNOWN_OUTCOMES, spec=KNOWN_SPEC, status="trials_failed")
    body = client.get("/api/findings").json()
    (sweep,) = body["sweeps"]
    assert sweep["status"] == "trials_failed" and sweep["failed_trials"] == 2
    assert sweep["caveats"] == ["2 failed trials left out of its metrics"]
    (adam,) = [row for row in body["rows"] if (row["task"], row["label"]) == ("digits-mlp", "adam")]
    (entry,) = adam["entries"]
    assert entry["status"] == "inconclusive" and entry["failed"] == 2 and "2 failed trials left out" in entry["reasons"]
    assert entry["sweep_status"] == "trials_failed" and entry["caveats"] == sweep["caveats"]


def test_computed_once_per_set_of_sweep_versions(
    client: TestClient, app: FastAPI, session: Session, two_sweeps
) -> None:
    """Each finished sweep is analysed once; a repeat, the page and the front page reuse it; ``If-None-Match``
    gets a 304 until a sweep finishes, which changes the answer and analyses that sweep alone."""
    cache = app.state.sweep_view_cache
    first = client.get("/api/findings")
    assert cache.findings.builds == 2
    assert client.get("/api/findings?budget=smoke").status_code == 200
    assert client.get("/findings").status_code == 200 and client.get("/").status_code == 200
    assert cache.findings.builds == 2
    again = client.get("/api/findings", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    store_sweep(session, "known", KNOWN_OUTCOMES, spec=KNOWN_SPEC, status="trials_failed")
    changed = client.get("/api/findings", headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and changed.headers["etag"] != first.headers["etag"]
    assert [sweep["name"] for sweep in changed.json()["sweeps"]] == ["known", "library", "verdict"]
    assert cache.findings.builds == 3


def test_reads_follow_the_read_token_setting(database_url: str, two_sweeps) -> None:
    closed = create_app(Settings(database_url=database_url, api_tokens=TOKEN, require_token_for_reads=True))
    with TestClient(closed) as client:
        for path in ("/api/findings", "/findings"):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/api/findings", headers=AUTH).json()["headline"].startswith("Nero out-of-the-box winner")
    schema = closed.openapi()
    assert "401" in schema["paths"]["/api/findings"]["get"]["responses"]


def test_openapi_describes_the_findings(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/findings"]["get"]
    assert operation["tags"] == ["findings"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FindingsPublic"
    }
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert {"budget", "preset", "task"} == set(parameters)
    (budgets,) = [option["enum"] for option in parameters["budget"]["anyOf"] if "enum" in option]
    assert budgets == ["smoke", "proxy", "paper"]
    entry = schema["components"]["schemas"]["FindingEntryPublic"]["properties"]
    assert {"ootb_regret", "best", "eta_star", "ootb_seeds", "best_seeds", "links", "reasons"} <= set(entry)
