"""Trial listings (paging, filters), one trial with its curve, the analysis JSON and the CSV/Parquet exports.

Trials are written with the store's repo functions, as the worker would; no Ray runs here.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

Submit = Callable[..., dict[str, Any]]
Finished = Callable[..., dict[tuple[str, float], int]]

# (label, lr) -> (status, final test error); digits-mlp starts at 0.9 (chance).
OUTCOMES: dict[tuple[str, float], tuple[str, float]] = {
    ("nero", 0.001): ("succeeded", 0.5),
    ("nero", 0.01): ("succeeded", 0.1),  # nero's default lr, and the best of the sweep
    ("nero", 0.1): ("succeeded", 0.2),
    ("adam", 0.001): ("succeeded", 0.15),  # adam's default lr, its best
    ("adam", 0.01): ("succeeded", 0.3),
    ("adam", 0.1): ("diverged", math.nan),
}


def _strict_json(text: str) -> Any:
    """Parse JSON as a strict client would: NaN/Infinity are not JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in a JSON response")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def sweep_with_trials(submit: Submit, finished_trials: Finished) -> tuple[str, dict[tuple[str, float], int]]:
    sweep = submit()
    return sweep["id"], finished_trials(sweep["id"], OUTCOMES)


def test_sweep_counts_its_trials(client: TestClient, sweep_with_trials: tuple[str, dict]) -> None:
    sweep_id, _ = sweep_with_trials

    sweep = client.get(f"/api/sweeps/{sweep_id}").json()

    assert sweep["counts"]["succeeded"] == 5
    assert sweep["counts"]["diverged"] == 1
    assert sweep["trials_total"] == 6


def test_trials_are_paged_by_id_with_total(client: TestClient, sweep_with_trials: tuple[str, dict]) -> None:
    sweep_id, ids = sweep_with_trials

    pages = [
        client.get(f"/api/sweeps/{sweep_id}/trials", params={"offset": offset, "limit": 4}).json() for offset in (0, 4)
    ]

    assert [page["total"] for page in pages] == [6, 6]
    assert [len(page["data"]) for page in pages] == [4, 2]
    assert [t["id"] for page in pages for t in page["data"]] == sorted(ids.values())


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "diverged"}, {("adam", 0.1)}),
        ({"label": "nero"}, {("nero", 0.001), ("nero", 0.01), ("nero", 0.1)}),
        ({"optimizer": "adam", "status": "succeeded"}, {("adam", 0.001), ("adam", 0.01)}),
        ({"task": "digits-mlp", "status": "pending"}, set()),
    ],
)
def test_trials_filter_by_status_task_and_optimizer(
    client: TestClient, sweep_with_trials: tuple[str, dict], params: dict[str, str], expected: set
) -> None:
    sweep_id, _ = sweep_with_trials

    page = client.get(f"/api/sweeps/{sweep_id}/trials", params=params).json()

    assert {(t["label"], t["lr"]) for t in page["data"]} == expected
    assert page["total"] == len(expected)


@pytest.mark.parametrize(
    ("params", "field", "valid"),
    [
        ({"status": "done"}, "status", "'pending', 'running', 'succeeded', 'diverged', 'failed' or 'cancelled'"),
    ],
)
def test_trial_filters_outside_the_sweep_are_422_with_valid_values(
    client: TestClient, sweep_with_trials: tuple[str, dict], params: dict[str, str], field: str, valid: str
) -> None:
    sweep_id, _ = sweep_with_trials

    response = client.get(f"/api/sweeps/{sweep_id}/trials", params=params)

    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert (error["field"], error["location"]) == (field, "query")
    assert valid in error["message"]


def test_trial_detail_has_its_curve_and_nan_is_null(client: TestClient, sweep_with_trials: tuple[str, dict]) -> None:
    _, ids = sweep_with_trials

    good = client.get(f"/api/trials/{ids[('nero', 0.01)]}")
    diverged = client.get(f"/api/trials/{ids[('adam', 0.1)]}")

    assert good.status_code == diverged.status_code == 200
    trial = _strict_json(good.text)
    assert (trial["task"], trial["label"], trial["lr"], trial["status"]) == ("digits-mlp", "nero", 0.01, "succeeded")
    assert trial["metric"] == 0.1 and trial["initial_metric"] == 0.9 and trial["wall_s"] == 1.5
    assert trial["curve"] == [
        {"step": 0, "epoch": 0.0, "train_loss": 2.3, "metric": 0.9},
        {"step": 10, "epoch": 1.0, "train_loss": 0.5, "metric": 0.1},
    ]
    bad = _strict_json(diverged.text)
    assert bad["status"] == "diverged"
    assert bad["metric"] is None
    assert bad["curve"][1]["train_loss"] is None and bad["curve"][1]["metric"] is None
    assert "nan" in bad["error"]
    # The optimiser settings the trial ran with, per network (preset and task overrides resolved).
    assert trial["settings"] == {"model": {"beta": 0.999, "constraints": True}}
    assert bad["settings"] == {"model": {"betas": [0.0, 0.999], "eps": 1e-08}}


@pytest.mark.parametrize("trial_id", ["0", "-3", "abc", str(2**63)])
def test_bad_trial_ids_are_422(client: TestClient, trial_id: str) -> None:
    response = client.get(f"/api/trials/{trial_id}")

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "trial_id"


def test_analysis_gives_the_robustness_metrics_as_strict_json(
    client: TestClient, sweep_with_trials: tuple[str, dict]
) -> None:
    sweep_id, _ = sweep_with_trials

    response = client.get(f"/api/sweeps/{sweep_id}/analysis")

    assert response.status_code == 200
    analysis = _strict_json(response.text)
    assert (analysis["sweep_id"], analysis["finished_trials"], analysis["total_trials"]) == (sweep_id, 6, 6)
    summaries = {s["label"]: s for s in analysis["per_optimizer"]}
    assert set(summaries) == {"nero", "adam"}
    nero, adam = summaries["nero"], summaries["adam"]
    assert nero["eta_star"] == 0.01 and nero["best"] == pytest.approx(0.1)
    assert adam["eta_star"] == 0.001 and adam["best"] == pytest.approx(0.15)
    # Out of the box, on the normalised scale (0 = best of all, 1 = chance 0.9): nero's default lr is the best
    # of the sweep; adam's 0.15 is (0.15 - 0.1) / (0.9 - 0.1) of the way to chance.
    assert nero["ootb_regret"] == pytest.approx(0.0)
    assert adam["ootb_regret"] == pytest.approx(0.0625)
    # Mean over the grid of min(m, m0) - best, the diverged lr counting as m0 = 0.9.
    assert nero["lr_sensitivity"] == pytest.approx((0.4 + 0.0 + 0.1) / 3)
    assert adam["lr_sensitivity"] == pytest.approx((0.0 + 0.15 + 0.75) / 3)
    assert analysis["tasks"][0]["best_label"] == "nero"
    assert set(analysis["profiles"]) == {"ootb", "tuned"}
    assert analysis["profiles"]["tuned"]["scores"]["nero"] == pytest.approx(1.0)
    assert nero["best_std"] is None  # one seed: NaN, sent as null
    assert analysis["failed_trials"] == 0
    # One seed: a paired comparison with the best cannot be made, and the answer says so.
    adam_vs_best = next(c for c in analysis["comparisons"] if c["label"] == "adam")
    assert adam_vs_best["best_label"] == "nero" and adam_vs_best["text"] == "1 seed: no interval"
    assert adam_vs_best["distinguishable"] is None and nero["best_ci"] == [None, None]
    # The verdict: one seed, so no optimiser is claimed a winner; each says why.
    (verdict,) = analysis["verdict"]["tasks"]
    assert verdict["winners"] == [] and {o["status"] for o in verdict["optimizers"]} == {"inconclusive"}
    assert "too little evidence" in verdict["sentence"]


def test_analysis_leaves_failed_trials_out_and_counts_them(
    client: TestClient, submit: Submit, finished_trials: Finished
) -> None:
    sweep_id = submit()["id"]
    outcomes = {**OUTCOMES, ("adam", 0.001): ("failed", math.nan), ("adam", 0.003): ("succeeded", 0.15)}
    finished_trials(sweep_id, outcomes)

    analysis = _strict_json(client.get(f"/api/sweeps/{sweep_id}/analysis").text)

    assert analysis["failed_trials"] == 1
    adam = next(s for s in analysis["per_optimizer"] if s["label"] == "adam")
    assert adam["failed"] == 1
    # The crash at adam's default lr is no evidence: no out-of-the-box number, not chance.
    assert adam["ootb"] is None and adam["best"] == pytest.approx(0.15)


def test_analysis_of_a_sweep_without_results_is_empty(client: TestClient, submit: Submit) -> None:
    sweep_id = submit()["id"]

    analysis = client.get(f"/api/sweeps/{sweep_id}/analysis").json()

    assert analysis["per_optimizer"] == [] and analysis["finished_trials"] == 0
    assert analysis["verdict"]["tasks"] == []


def test_csv_export_has_one_row_per_trial(client: TestClient, sweep_with_trials: tuple[str, dict]) -> None:
    sweep_id, ids = sweep_with_trials

    response = client.get(f"/api/sweeps/{sweep_id}/export.csv")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f'filename="sweep-{sweep_id}.csv"' in response.headers["content-disposition"]
    frame = pd.read_csv(io.StringIO(response.text))
    assert len(frame) == 6
    assert sorted(frame["id"]) == sorted(ids.values())
    row = frame.set_index("id").loc[ids[("nero", 0.01)]]
    assert (row["label"], row["lr"], row["status"], row["metric"]) == ("nero", 0.01, "succeeded", 0.1)
    assert math.isnan(frame.set_index("id").loc[ids[("adam", 0.1)], "metric"])
    assert json.loads(row["hyperparameters"]) == {}


def test_parquet_export_keeps_types_and_nan(client: TestClient, sweep_with_trials: tuple[str, dict]) -> None:
    sweep_id, ids = sweep_with_trials

    response = client.get(f"/api/sweeps/{sweep_id}/export.parquet")

    assert response.status_code == 200
    assert f'filename="sweep-{sweep_id}.parquet"' in response.headers["content-disposition"]
    frame = pd.read_parquet(io.BytesIO(response.content)).set_index("id")
    assert len(frame) == 6
    assert frame["lr"].dtype == "float64" and frame["metric"].dtype == "float64"
    assert math.isnan(frame.loc[ids[("adam", 0.1)], "metric"])
    assert frame.loc[ids[("adam", 0.001)], "metric"] == 0.15
    assert str(frame["finished_at"].dtype).startswith("datetime64")


def test_exports_of_an_empty_sweep_have_the_header_only(client: TestClient, submit: Submit) -> None:
    sweep_id = submit()["id"]

    csv = client.get(f"/api/sweeps/{sweep_id}/export.csv")
    parquet = client.get(f"/api/sweeps/{sweep_id}/export.parquet")

    assert csv.text.splitlines()[0].startswith("id,sweep_id,task")
    assert len(csv.text.splitlines()) == 1
    assert len(pd.read_parquet(io.BytesIO(parquet.content))) == 0
