"""``/findings`` and the front page's headline, over HTTP on SQLite, with the hand-made sweeps of
tests/study/test_study_findings.py (A ``verdict``: smoke, paper; B ``library``: proxy, library)."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.dashboards.test_pages import verdict_outcomes
from tests.study.test_study_findings import A_SPEC, LIBRARY_SPEC, library_outcomes

HEADLINE = "Nero out-of-the-box winner on 1 of 2 tasks across 2 finished sweeps (mixed on 1)."


def _overall(html: str) -> dict[tuple[str, str], str]:
    pattern = r'data-finding-task="([^"]+)" data-finding-label="([^"]+)" data-overall="([^"]+)"'
    return {(task, label): overall for task, label, overall in re.findall(pattern, html)}


def test_findings_page_shows_both_sweeps(client: TestClient, make_sweep: Callable[..., str]) -> None:
    a = make_sweep("verdict", verdict_outcomes(), spec=A_SPEC)
    b = make_sweep("library", library_outcomes(), spec=LIBRARY_SPEC)
    response = client.get("/findings")
    assert response.status_code == 200 and response.headers["etag"]
    html = response.text
    assert f'<p class="findings-headline" id="findings-headline">{HEADLINE}</p>' in html
    assert _overall(html) == {
        ("digits-mlp", "nero"): "mixed",
        ("digits-mlp", "adam"): "mixed",
        ("digits-mlp", "sgd"): "behind",
        ("digits-mlp", "lamb"): "winner",
        ("ppo-cartpole", "nero"): "winner",
        ("ppo-cartpole", "adam"): "behind",
    }
    assert f'href="/sweeps/{a}"' in html and f'href="/sweeps/{b}"' in html
    nero = html[html.index('data-finding-task="digits-mlp" data-finding-label="nero"') :]
    nero = nero[: nero.index("</tbody>")]
    assert f'data-finding-sweep="{b}" data-status="behind"' in nero
    assert '<td class="finding-regret">0.25</td>' in nero and '<td class="finding-lr">0.001</td>' in nero
    assert '<td class="finding-seeds">3 / 3</td>' in nero
    assert 'href="/api/findings"' in html


def test_findings_page_filters_and_bad_values(client: TestClient, make_sweep: Callable[..., str]) -> None:
    make_sweep("verdict", verdict_outcomes(), spec=A_SPEC)
    make_sweep("library", library_outcomes(), spec=LIBRARY_SPEC)
    html = client.get("/findings?budget=smoke&preset=&task=").text  # empty choices are "any"
    assert "Nero out-of-the-box winner on 1 of 1 task across 1 finished sweep." in html
    assert set(_overall(html)) == {("digits-mlp", label) for label in ("nero", "adam", "sgd", "lamb")}
    assert '<option value="smoke" selected>smoke</option>' in html
    assert 'href="/api/findings?budget=smoke"' in html
    empty = client.get("/findings?task=digit-mlp").text
    assert _overall(empty) == {}
    assert "No finished sweep matches task digit-mlp. Tasks with findings: digits-mlp, ppo-cartpole." in empty
    bad = client.get("/findings?budget=tiny&preset=mine")
    assert bad.status_code == 422
    assert "Unknown budget &#39;tiny&#39;; valid: smoke, proxy, paper." in bad.text
    assert "Unknown preset &#39;mine&#39;; valid: paper, library." in bad.text


def test_front_page_links_the_findings_with_their_headline(client: TestClient, make_sweep: Callable[..., str]) -> None:
    empty = client.get("/").text
    assert 'href="/findings"' in empty and "No finished sweeps to draw findings from yet." in empty
    make_sweep("verdict", verdict_outcomes(), spec=A_SPEC)
    make_sweep("library", library_outcomes(), spec=LIBRARY_SPEC)
    html = client.get("/").text
    assert f'<span id="front-findings-headline">{HEADLINE}</span>' in html
    assert '<a href="/findings" id="findings-link">' in html
