"""Low items of issue 19 through HTTP: security headers, CSV cells that a spreadsheet would run as formulas,
and a wrong token that never takes the database's write lock."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

AUTH = {"Authorization": "Bearer test-token"}


@pytest.mark.parametrize("path", ["/", "/api/sweeps", "/healthz", "/docs"])
def test_every_response_carries_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "same-origin"


def test_csv_export_escapes_cells_a_spreadsheet_would_run(
    client: TestClient, submit: Callable[..., dict[str, Any]], finished_trials: Callable[..., Any]
) -> None:
    labels = ["=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)", "-2", "plain"]
    spec = {
        "tasks": ["digits-mlp"],
        "optimizers": [{"name": "nero", "label": label} for label in labels],
        "lrs": [0.01],
        "budget": "smoke",
    }
    sweep = submit(spec)
    finished_trials(sweep["id"], {(label, 0.01): ("succeeded", -0.5) for label in labels})

    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/sweeps/{sweep['id']}/export.csv").text)))

    escaped = ["'=HYPERLINK(\"http://x\")", "'+1", "'@SUM(A1)", "'-2", "plain"]
    assert sorted(row["label"] for row in rows) == sorted(escaped)
    assert {float(row["metric"]) for row in rows} == {-0.5}  # numbers stay numbers, negative ones included


def test_a_wrong_token_is_refused_while_another_process_holds_the_write_lock(
    client: TestClient, database_url: str
) -> None:
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # a writer elsewhere (a worker writing trials)
        response = client.post("/api/sweeps", json={}, headers={"Authorization": "Bearer wrong-token"})
        assert response.status_code == 401
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_figure_legends_show_label_markup_as_text(
    client: TestClient, submit: Callable[..., dict[str, Any]], finished_trials: Callable[..., Any]
) -> None:
    label = '<a href="http://example.com">x</a><b>bold</b>'
    spec = {
        "tasks": ["digits-mlp"],
        "optimizers": [{"name": "nero", "label": label}, "adam"],
        "lrs": [0.001, 0.01],
        "budget": "smoke",
    }
    sweep = submit(spec)
    finished_trials(
        sweep["id"],
        {(lbl, lr): ("succeeded", 0.2 + lr) for lbl in (label, "adam") for lr in (0.001, 0.01)},
    )

    figures = client.get(f"/sweeps/{sweep['id']}/figures.json").json()["figures"]

    names = [trace.get("name", "") for fig in figures.values() for trace in fig["data"]]
    assert any("&lt;a href=" in name for name in names)  # the label is in a legend, as text
    assert not any("<a " in name or "<b>" in name for name in names)
