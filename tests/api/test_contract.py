"""Schema and behaviour agree (issue 19's schemathesis findings): a trial filter the schema allows (any string)
answers 200, an empty page when it names nothing in the sweep; the label rule is stated in the schema as the
pattern the validator uses; OPTIONS names every method of a path."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from nero_study.study.spec import LABEL_PATTERN

AUTH = {"Authorization": "Bearer test-token"}


@pytest.mark.parametrize("params", [{"label": "sgd"}, {"task": "text-lm"}, {"optimizer": "lamb"}, {"label": "\u00e9"}])
def test_a_filter_naming_nothing_in_the_sweep_is_an_empty_page(
    client: TestClient, submit: Callable[..., dict[str, Any]], finished_trials: Callable[..., Any], params: dict
) -> None:
    sweep = submit()
    finished_trials(sweep["id"], {("nero", 0.01): ("succeeded", 0.2), ("adam", 0.01): ("succeeded", 0.3)})

    response = client.get(f"/api/sweeps/{sweep['id']}/trials", params=params)
    known = client.get(f"/api/sweeps/{sweep['id']}/trials", params={"label": "nero"})

    assert response.status_code == 200, response.text
    assert (response.json()["data"], response.json()["total"]) == ([], 0)
    assert [trial["label"] for trial in known.json()["data"]] == ["nero"]


def test_any_schema_valid_trial_query_on_a_real_sweep_is_accepted(
    app: FastAPI, client: TestClient, submit: Callable[..., dict[str, Any]]
) -> None:
    """Schemathesis' positive cases with the sweep id of a stored sweep (not a random 404): every query the schema
    allows is answered 2xx (its ``positive_data_acceptance`` check; the probe's 422 for an unknown label failed it)."""
    sweep_id = submit()["id"]
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)["/api/sweeps/{sweep_id}/trials"]["GET"]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        case.path_parameters = {"sweep_id": sweep_id}
        case.call_and_validate(headers=AUTH)

    check()


LABELS = [
    ("nero", True), ("nero-\u03b1", True), ("a b", True), ("\u00e9t\u00e9", True),
    (" nero", False), ("nero ", False), ("ne\nro", False), ("nero\n", False), ("ne\x00ro", False), ("\x7f", False),
    ("\u202eoren", False), ("ne\u200bro", False), ("ne\u2028ro", False), ("\ufeffnero", False),
]


@pytest.mark.parametrize(("label", "valid"), LABELS)
def test_the_schema_states_the_label_rule_the_server_applies(
    client: TestClient, label: str, valid: bool
) -> None:
    schema = client.get("/openapi.json").json()
    stated = schema["components"]["schemas"]["OptimizerVariant"]["properties"]["label"]
    spec = {"tasks": ["digits-mlp"], "optimizers": [{"name": "nero", "label": label}], "lrs": [0.01], "budget": "smoke"}

    response = client.post("/api/sweeps", json=spec, headers=AUTH)

    assert stated["pattern"] == LABEL_PATTERN and "control characters" in stated["description"]
    assert bool(re.fullmatch(stated["pattern"], label)) is valid  # what the schema says
    assert response.status_code == (201 if valid else 422), response.text  # what the server does
    if not valid:  # the body reader refuses NUL in any text first, with its own message
        detail = response.json()["detail"]
        assert "no white space at either end, and no control characters" in detail or "NUL characters" in detail


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/sweeps", "GET, HEAD, OPTIONS, POST"),
        ("/api/sweeps/0123456789abcdef0123456789abcdef", "GET, HEAD, OPTIONS"),
        ("/api/sweeps/0123456789abcdef0123456789abcdef/cancel", "OPTIONS, POST"),
        ("/healthz", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_names_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    response = client.options(path)

    assert response.status_code == 204
    assert response.headers["allow"] == allowed
    assert response.headers["x-frame-options"] == "DENY"


def test_options_on_a_path_that_does_not_exist_is_404(client: TestClient) -> None:
    assert client.options("/api/nothing-here").status_code == 404
