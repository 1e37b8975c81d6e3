"""Figures as SVG and PDF (``dashboards.figure_export`` and ``GET /api/sweeps/{id}/figures/{name}.{format}``),
rendered for real in Debian's Chromium (``/usr/bin/chromium``) from the figures the sweep page draws.

The files are checked as a reader would open them: the SVG parses as XML with an ``<svg>`` root of the exported
size and shows the figure's title, axis titles and legend entries as text; the PDF has a valid header, a
cross-reference table whose every entry points at its object, a catalog with one page of the exported size
(CSS pixels at 72/96 pt) whose content stream draws text and paths. Without Chromium the rendering tests are
skipped with the reason, except under CI (``CI=true``), where they fail; the errors for a missing browser are
tested with a path where there is none, everywhere.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from dashboards import figure_export, pages
from dashboards.snapshot import load_sweep_snapshot
from nero_study.settings import DEFAULT_CHROMIUM_PATH, Settings

SVG_NAMESPACE = "{http://www.w3.org/2000/svg}"
#: A PDF point is 1/72 inch, a CSS pixel 1/96 inch; Chromium rounds the page to its layout units (< 1 pt off).
POINTS_PER_PIXEL = 72 / 96
NAMES = [name for name, _ in pages.SWEEP_FIGURES]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (figure export tests must run under CI)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    if not (DEFAULT_CHROMIUM_PATH.is_file() and os.access(DEFAULT_CHROMIUM_PATH, os.X_OK)):
        _unavailable(f"Chromium is not installed at {DEFAULT_CHROMIUM_PATH} (Debian: apt-get install chromium)")
    return DEFAULT_CHROMIUM_PATH


@pytest.fixture
def page_figures(session: Session, make_sweep: Callable[..., str]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The known sweep (two tasks, nero and adam) and the figures its page draws."""
    sweep_id = make_sweep("export")
    snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    assert snapshot is not None
    return sweep_id, pages.sweep_figures(snapshot)


# --- what a reader of the files checks -----------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("text")
    return value if isinstance(value, str) else ""


def shown_texts(figure: dict[str, Any]) -> set[str]:
    """The plain words a figure shows: its title, every axis title and every legend entry."""
    layout = figure.get("layout", {})
    texts = {_text(layout.get("title"))}
    for key, axis in layout.items():
        if re.fullmatch(r"[xy]axis\d*", key) and isinstance(axis, dict):
            texts.add(_text(axis.get("title")))
    if layout.get("showlegend", True):
        texts.update(
            trace["name"] for trace in figure.get("data", []) if trace.get("showlegend", True) and trace.get("name")
        )
    return {text for text in texts if text and "<" not in text and "&" not in text}  # plain text only


def svg_texts(svg: bytes) -> tuple[ET.Element, str]:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    words = " ".join(" ".join(node.itertext()) for node in root.iter(f"{SVG_NAMESPACE}text"))
    return root, words


def check_svg(svg: bytes, figure: dict[str, Any], size: tuple[int, int]) -> None:
    root, words = svg_texts(svg)
    assert root.tag == f"{SVG_NAMESPACE}svg"
    assert (float(root.get("width", 0)), float(root.get("height", 0))) == size
    for text in shown_texts(figure):
        assert text in words, f"{text!r} is not in the SVG's text"


def pdf_objects(pdf: bytes) -> dict[int, bytes]:
    """Every object of a PDF with a classic cross-reference table, by number, read at the offsets the table
    gives (each must start ``<n> <gen> obj``); fails on a broken header, trailer or table."""
    assert pdf.startswith(b"%PDF-1."), pdf[:16]
    assert pdf.rstrip().endswith(b"%%EOF")
    start = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf).group(1))
    assert pdf[start:].startswith(b"xref"), "startxref does not point at the cross-reference table"
    table, _, trailer = pdf[start + 4 :].partition(b"trailer")
    objects: dict[int, bytes] = {}
    lines = iter(table.split())
    for first in lines:
        count = int(next(lines))
        for number in range(int(first), int(first) + count):
            offset, generation, kind = int(next(lines)), int(next(lines)), next(lines)
            if kind == b"n":
                header = f"{number} {generation} obj".encode()
                assert pdf[offset:].startswith(header), f"object {number} is not at offset {offset}"
                objects[number] = pdf[offset : pdf.index(b"endobj", offset)]
    size = int(re.search(rb"/Size (\d+)", trailer).group(1))
    assert max(objects) < size
    objects[-1] = trailer
    return objects


def _ref(obj: bytes, key: bytes) -> int:
    return int(re.search(rb"/" + key + rb" (\d+) 0 R", obj).group(1))


def _stream(obj: bytes) -> bytes:
    body = obj[obj.index(b"stream") + len(b"stream") :].lstrip(b"\r\n")
    body = body[: body.rindex(b"endstream")]
    return zlib.decompress(body) if b"/FlateDecode" in obj[: obj.index(b"stream")] else body


def check_pdf(pdf: bytes, size: tuple[int, int]) -> None:
    objects = pdf_objects(pdf)
    catalog = objects[_ref(objects[-1], b"Root")]
    assert b"/Type /Catalog" in catalog
    tree = objects[_ref(catalog, b"Pages")]
    assert re.search(rb"/Count 1\b", tree), "one page"
    page_number = int(re.search(rb"/Kids \[(\d+) 0 R\]", tree).group(1))
    page = objects[page_number]
    box = [float(v) for v in re.search(rb"/MediaBox \[([^\]]*)\]", page).group(1).split()]
    assert box[:2] == [0, 0]
    assert box[2] == pytest.approx(size[0] * POINTS_PER_PIXEL, abs=1.0)
    assert box[3] == pytest.approx(size[1] * POINTS_PER_PIXEL, abs=1.0)
    content = _stream(objects[_ref(page, b"Contents")])
    assert re.search(rb"\bT[jJ]\b", content), "the page shows text"
    assert re.search(rb"\b[fS]\b", content), "the page fills or strokes paths"
    assert b"/Font" in pdf


# --- rendering -------------------------------------------------------------------------------------------


def test_every_figure_of_the_page_renders_as_svg_and_pdf(
    chromium: Path, page_figures: tuple[str, dict[str, dict[str, Any]]]
) -> None:
    _, figures = page_figures
    rendered = figure_export.render_figures(figures, chromium=chromium)
    assert set(rendered) == {(name, fmt) for name in NAMES for fmt in ("svg", "pdf")}
    for name in NAMES:
        size = figure_export.export_size(name, figures[name])
        check_svg(rendered[(name, "svg")], figures[name], size)
        check_pdf(rendered[(name, "pdf")], size)
    # The lr-sensitivity figure shows both tasks' panels and both optimisers, on a log lr axis.
    _, words = svg_texts(rendered[("lr-sensitivity", "svg")])
    assert {"digits-mlp", "ppo-cartpole", "nero", "adam"} <= set(words.split())
    assert any(w in words for w in ("10−3", "0.001", "1e-3", "10^-3")), words[:500]


def test_export_size_follows_the_page() -> None:
    assert figure_export.export_size("lr-sensitivity", {"layout": {"height": 420}}) == (1000, 420)
    assert figure_export.export_size("heatmap", {"layout": {}}) == (640, figure_export.DEFAULT_HEIGHT)
    assert figure_export.export_size("heatmap", {"layout": {"width": 800, "height": 300}}) == (800, 300)


def test_unknown_format_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Unknown figure format 'png'; valid: svg, pdf"):
        figure_export.render_figures({"x": {"data": [], "layout": {}}}, ["png"])


def test_missing_browser_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    with pytest.raises(figure_export.ChromiumMissing, match=r"no-chromium.*apt-get install chromium"):
        figure_export.render_figures({"x": {"data": [], "layout": {}}}, chromium=missing)
    not_executable = tmp_path / "chromium"
    not_executable.write_text("")
    with pytest.raises(figure_export.ChromiumMissing, match="there is none at"):
        figure_export.render_figure({"data": [], "layout": {}}, "svg", chromium=not_executable)


def test_a_browser_that_cannot_start_is_an_export_error(tmp_path: Path) -> None:
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(figure_export.FigureExportError, match="Chromium at .*chromium"):
        figure_export.render_figure({"data": [], "layout": {}}, "svg", chromium=broken)


# --- the API ---------------------------------------------------------------------------------------------


def test_api_serves_each_figure_as_svg_and_pdf(
    chromium: Path, client: TestClient, page_figures: tuple[str, dict[str, dict[str, Any]]]
) -> None:
    sweep_id, figures = page_figures
    name = "ootb-vs-tuned"
    size = figure_export.export_size(name, figures[name])
    svg = client.get(f"/api/sweeps/{sweep_id}/figures/{name}.svg")
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-disposition"] == f'attachment; filename="nero-study-{sweep_id}-{name}.svg"'
    check_svg(svg.content, figures[name], size)
    pdf = client.get(f"/api/sweeps/{sweep_id}/figures/{name}.pdf")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    check_pdf(pdf.content, size)
    # Kept per sweep version: asking again with the validator is a 304, without it the same bytes.
    again = client.get(f"/api/sweeps/{sweep_id}/figures/{name}.svg", headers={"If-None-Match": svg.headers["etag"]})
    assert again.status_code == 304
    assert client.get(f"/api/sweeps/{sweep_id}/figures/{name}.svg").content == svg.content


def test_api_unknown_figure_names_the_available_ones(client: TestClient, make_sweep: Callable[..., str]) -> None:
    sweep_id = make_sweep("names")
    response = client.get(f"/api/sweeps/{sweep_id}/figures/lr-sensitivty.svg")
    assert response.status_code == 404
    assert response.json()["detail"] == f"No figure 'lr-sensitivty'; a sweep's figures: {', '.join(NAMES)}"
    response = client.get(f"/api/sweeps/{sweep_id}/figures/lr-sensitivity.png")
    assert response.status_code == 422
    assert response.json()["detail"] == r"figure_file: String should match pattern '^[a-z0-9-]+\.(svg|pdf)$'"
    assert client.get("/api/sweeps/unknown/figures/heatmap.svg").status_code == 404


@pytest.fixture
def client_without_browser(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, api_tokens="test-token", chromium_path=tmp_path / "no-chromium")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_without_a_browser_answers_503_saying_what_to_install(
    client_without_browser: TestClient, make_sweep: Callable[..., str]
) -> None:
    sweep_id = make_sweep("no browser")
    response = client_without_browser.get(f"/api/sweeps/{sweep_id}/figures/heatmap.pdf")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "no-chromium" in detail and "apt-get install chromium" in detail
    # The rest of the service works on.
    assert client_without_browser.get(f"/sweeps/{sweep_id}").status_code == 200


def test_figure_reads_need_a_token_where_reads_do(database_url: str, make_sweep: Callable[..., str]) -> None:
    settings = Settings(database_url=database_url, api_tokens="test-token", require_token_for_reads=True)
    sweep_id = make_sweep("private")
    with TestClient(create_app(settings)) as guarded:
        assert guarded.get(f"/api/sweeps/{sweep_id}/figures/heatmap.svg").status_code == 401
        assert guarded.get(f"/sweeps/{sweep_id}/figures.json").status_code == 401


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_report_writes_every_figure_as_svg_and_pdf(
    chromium: Path, database_url: str, page_figures: tuple[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from nero_study.cli import app

    sweep_id, figures = page_figures
    out = tmp_path / "figures"
    command = ["report", sweep_id, "--db", database_url, "--markdown"]
    result = CliRunner().invoke(app, [*command, "--figures", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == CliRunner().invoke(app, command).stdout  # stdout: the table alone, as without --figures
    assert result.stderr == f"wrote 14 figure files (SVG and PDF) to {out}\n"
    written = sorted(path.name for path in out.iterdir())
    assert written == sorted(f"nero-study-{sweep_id}-{name}.{fmt}" for name in NAMES for fmt in ("svg", "pdf"))
    for name in NAMES:
        size = figure_export.export_size(name, figures[name])
        check_svg((out / f"nero-study-{sweep_id}-{name}.svg").read_bytes(), figures[name], size)
        check_pdf((out / f"nero-study-{sweep_id}-{name}.pdf").read_bytes(), size)


def test_cli_figures_without_a_browser_exit_2_saying_what_to_install(
    database_url: str, make_sweep: Callable[..., str], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from nero_study.cli import app

    sweep_id = make_sweep("cli no browser")
    out = tmp_path / "figures"
    missing = tmp_path / "no-chromium"
    result = CliRunner().invoke(
        app,
        ["report", sweep_id, "--db", database_url, "--figures", str(out)],
        env={"NERO_STUDY_CHROMIUM_PATH": str(missing), "COLUMNS": "400"},
    )
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert f"error: --figures: Exporting figures needs Chromium, and there is none at {missing}" in message
    assert "apt-get install chromium" in message
    assert not out.exists()  # nothing written
    assert result.stdout == ""  # and no report printed after the failure


# --- the sweep page ---------------------------------------------------------------------------------------


def test_sweep_page_links_svg_and_pdf_beside_every_figure(client: TestClient, make_sweep: Callable[..., str]) -> None:
    sweep_id = make_sweep("links")
    html = client.get(f"/sweeps/{sweep_id}").text
    for name in NAMES:
        figure = rf'id="figure-{name}" class="figure"></div>\s*'
        beside = re.search(figure + rf'<div class="figure-downloads[^"]*" data-figure="{name}">(.*?)</div>', html, re.S)
        assert beside, f"no download links beside figure {name}"
        links = re.findall(r'<a href="([^"]+)" download data-format="(\w+)">(\w+)</a>', beside.group(1))
        assert links == [
            (f"/api/sweeps/{sweep_id}/figures/{name}.svg", "svg", "SVG"),
            (f"/api/sweeps/{sweep_id}/figures/{name}.pdf", "pdf", "PDF"),
        ]
    # The single-file report has no server to ask: no download links there.
    report = client.get(f"/sweeps/{sweep_id}/report.html").text
    assert 'class="figure-downloads' not in report and "/figures/" not in report
