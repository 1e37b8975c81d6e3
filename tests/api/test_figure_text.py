"""Plotly markup in users' strings is shown as text everywhere in the figures (issue 19): labels, task names,
metric names and sweep names reach legends, titles, axis titles and category ticks, hover templates and texts and
annotations; none of them may carry a live ``<a href>``, ``<b>`` or ``<br>`` into Plotly, while the figures' own
markup (``<extra>``, ``<br>`` between hover lines) stays markup."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from fastapi.testclient import TestClient

AUTH = {"Authorization": "Bearer test-token"}
LINK = '<a href="http://example.com">x</a>'
LABEL = f"{LINK}<b>bold</b>"
TASK = "<b>T</b><br>ask"
METRIC = "<i>err</i>"
SWEEP = "<a href='http://example.com'>sweep</a>"
RAW = ("<a ", "<b>", "<i>", "<br>ask", "</a>")


def strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a figure's JSON, with where it is (``data[0].hovertemplate``)."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{where}.{key}" if where else key)


def imported(client: TestClient, name: str) -> str:
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["task", "label", "optimizer", "lr", "seed", "status", "metric", "metric_name",
                     "lower_is_better", "chance"])
    for label, optimizer in ((LABEL, "nero"), ("adam", "adam")):
        for lr, metric in ((0.001, 0.5), (0.01, 0.3), (0.1, 0.6)):
            writer.writerow([TASK, label, optimizer, lr, 0, "succeeded", metric + (0.1 if label == "adam" else 0),
                             METRIC, "true", 0.9])
    response = client.post(
        "/api/sweeps/import", params={"name": name}, content=rows.getvalue(),
        headers={**AUTH, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_users_markup_is_text_in_every_part_of_every_figure(client: TestClient) -> None:
    sweep_id = imported(client, SWEEP)
    other_id = imported(client, "plain")

    figures = client.get(f"/sweeps/{sweep_id}/figures.json").json()["figures"]
    trial_id = client.get(f"/api/sweeps/{sweep_id}/trials", params={"label": LABEL}).json()["data"][0]["id"]
    trial_figures = client.get(f"/trials/{trial_id}/figures.json").json()["figures"]
    compare = client.get("/compare", params={"sweeps": f"{sweep_id},{other_id}"})

    found = [item for figure in (*figures.values(), *trial_figures.values()) for item in strings(figure)]
    raw = [(where, text) for where, text in found if any(mark in text for mark in RAW)]
    assert raw == []  # no user markup left live anywhere
    escaped = {where.split("[")[0].split(".")[0] for where, text in found if "&lt;a href=" in text}
    assert "data" in escaped  # the label reached the traces, as text
    places = {where for where, text in found if "&lt;b&gt;T&lt;/b&gt;&lt;br&gt;ask" in text}
    assert any("annotations" in where for where in places)  # the task's panel title
    assert any(where.endswith("hovertemplate") or where.endswith("text") or ".y[" in where for where in places)
    assert any("title" in where and "&lt;i&gt;err&lt;/i&gt;" in text for where, text in found)  # axis title
    assert any(".x[" in where and "&lt;a href=" in text for where, text in found)  # category ticks (bars)
    own = [text for _, text in found if "<extra>" in text]
    assert own  # the figures' own hover markup is untouched
    assert compare.status_code == 200
    # /compare embeds its figures in the page (JSON inside a script: "&" written \u0026, "<" written \u003c).
    assert '"text": "Learning-rate sensitivity: \\u0026lt;a href=' in compare.text  # the sweep's name, as text
    assert "sensitivity: \\u003ca" not in compare.text and "sensitivity: <a" not in compare.text
