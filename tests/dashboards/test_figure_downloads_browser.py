"""Downloading a figure as SVG and PDF from a finished sweep's page, in Debian's Chromium driven by Playwright,
as a user would: click the link beside the figure and take the file the browser saves.

Uses the browser, server and page fixtures of ``test_browser.py`` (skipped without Chromium, failed under CI).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashboards import figure_export
from tests.dashboards.test_browser import Watched, browser, live_server, wait_for_plots, watched  # noqa: F401
from tests.dashboards.test_figure_export import check_pdf, check_svg

pytestmark = pytest.mark.browser


def test_svg_and_pdf_downloaded_from_a_figure_of_a_finished_sweep(
    watched: Watched, live_server: str, make_sweep: Callable[..., str], tmp_path: Path  # noqa: F811
) -> None:
    sweep_id = make_sweep("downloads")
    page = watched.page
    page.goto(f"{live_server}/sweeps/{sweep_id}")
    wait_for_plots(page, 7)
    name = "lr-sensitivity"
    # The figure the page drew is the one the files are rendered from.
    figure: dict[str, Any] = page.evaluate(
        f"""() => {{
            const plot = document.getElementById('figure-{name}');
            return JSON.parse(JSON.stringify({{data: plot.data, layout: plot.layout}}));
        }}"""
    )
    size = figure_export.export_size(name, figure)
    box = page.locator(f'.figure-downloads[data-figure="{name}"]')
    for file_format, check in (("svg", check_svg), ("pdf", check_pdf)):
        link = box.locator(f'a[data-format="{file_format}"]')
        assert link.inner_text() == file_format.upper()
        with page.expect_download(timeout=120_000) as download_info:
            link.click()
        download = download_info.value
        assert download.failure() is None
        assert download.suggested_filename == f"nero-study-{sweep_id}-{name}.{file_format}"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        content = saved.read_bytes()
        if file_format == "svg":
            check(content, figure, size)
        else:
            check(content, size)
    assert watched.errors == []
    assert watched.external == []
