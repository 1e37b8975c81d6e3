"""The single-file HTML report: everything inlined (plotly.js included), the same figures and tables."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from markupsafe import escape as html_escape
from typer.testing import CliRunner

from dashboards import pages
from dashboards.report import write_html_report
from dashboards.templating import plotly_js_path
from nero_study.tasks.registry import get_task


class ExternalReferences(HTMLParser):
    """The URLs an HTML page loads: script ``src``, link ``href``, img/iframe ``src`` (script bodies are not
    parsed as HTML, so strings inside the inlined plotly.js do not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.script_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        self.loaded.extend(value or "" for name, value in attrs if name == wanted)
        if tag == "script":
            self.script_ids.extend(value or "" for name, value in attrs if name == "id")


def test_report_is_self_contained(database_url: str, make_sweep: Callable[..., str], tmp_path: Path) -> None:
    sweep_id = make_sweep("report me")
    path = write_html_report(sweep_id=sweep_id, database_url=database_url, path=tmp_path / "out" / "report.html")
    html = path.read_text(encoding="utf-8")
    # plotly.js inline (the package's file, banner and all), no script or stylesheet loaded from anywhere.
    plotly_js = plotly_js_path().read_text(encoding="utf-8")
    assert plotly_js[:200] in html and f"plotly.js v{plotly_js.split('plotly.js v')[1].split()[0]}" in html
    assert len(html) > len(plotly_js)
    parser = ExternalReferences()
    parser.feed(html)
    # Nothing is fetched (the favicon is an inline data: URL): no http(s) script src either.
    assert [url for url in parser.loaded if not url.startswith("data:")] == []
    assert "Plotly.newPlot" in html  # our drawing script, inlined
    # The same figures and tables as the sweep page, and no live polling.
    figures = json.loads(re.search(r'<script type="application/json" id="page-figures">(.*?)</script>', html, re.S)[1])
    assert set(figures) == {key for key, _ in pages.SWEEP_FIGURES}
    assert "report me" in html and "0.25 ± 0.071" in html and "Robustness metrics" in html
    assert parser.script_ids == ["page-figures"]  # no "page-live": a report does not poll
    # A task's known limit is stated beside its results (the sweep ran ppo-cartpole).
    assert f"caveat (ppo-cartpole):</b> {html_escape(get_task('ppo-cartpole').caveat)}" in html


def test_report_unknown_sweep(database_url: str, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="nope"):
        write_html_report(sweep_id="nope", database_url=database_url, path=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report_html(database_url: str, make_sweep: Callable[..., str], tmp_path: Path) -> None:
    from nero_study.cli import app

    sweep_id = make_sweep("from the cli")
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["report", sweep_id, "--db", database_url, "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert "from the cli" in out.read_text(encoding="utf-8")
