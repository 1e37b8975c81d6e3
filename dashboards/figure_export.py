"""A sweep's figures as SVG and PDF files for a paper, rendered on the server from the figures the page draws.

The figure dicts are those of :func:`dashboards.pages.sweep_figures` (the page, its live updates and the
report use the same ones); Kaleido, the static-export library Plotly recommends, draws them with the
``plotly.min.js`` of the installed ``plotly`` package in the Chromium installed on this machine (Debian's
``/usr/bin/chromium`` unless ``NERO_STUDY_CHROMIUM_PATH`` names another). Nothing is fetched from the network:
MathJax is off (no figure uses LaTeX), and Kaleido is always given the browser's path, so it never looks for
or downloads a browser of its own.

One browser is started per call of :func:`render_figures` (4-6 s on a busy 2-core machine) and draws every
figure and format asked for (about a second each there); the API asks for one file at a time and keeps the
answer per sweep version, the CLI asks for all fourteen files at once.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nero_study.settings import DEFAULT_CHROMIUM_PATH

#: The formats a figure can be exported in, with their media types.
FIGURE_FORMATS: dict[str, str] = {"svg": "image/svg+xml", "pdf": "application/pdf"}
#: Where Debian installs Chromium (``apt-get install chromium``); the tests' browser too.
DEFAULT_CHROMIUM = DEFAULT_CHROMIUM_PATH
#: What to install when there is no browser (the message of :class:`ChromiumMissing`).
INSTALL_HINT = "install Chromium (Debian/Ubuntu: apt-get install chromium) or set NERO_STUDY_CHROMIUM_PATH to a Chrome"
#: Exported widths in CSS pixels, as wide as each figure is on the sweep page (a full-width card or half of one).
WIDE_FIGURE_WIDTH = 1000
NARROW_FIGURE_WIDTH = 640
WIDE_FIGURES: frozenset[str] = frozenset({"lr-sensitivity", "curves", "progress"})
#: Height when a figure sets none (every figure of the sweep page sets its own).
DEFAULT_HEIGHT = 500
#: Seconds one figure may take to draw before the export fails.
RENDER_TIMEOUT_SECONDS = 60.0
#: Browsers one process runs at once for exports (each is a few hundred MB); more requests wait their turn.
MAX_BROWSERS = 2

_browsers = threading.BoundedSemaphore(MAX_BROWSERS)


class FigureExportError(RuntimeError):
    """The figures could not be rendered (the browser failed to start or to draw); the message says why."""


class ChromiumMissing(FigureExportError):
    """No browser at the configured path: nothing can be rendered until one is installed."""


def chromium_or_error(path: str | Path | None = None) -> Path:
    """The browser to render with (``path``, else :data:`DEFAULT_CHROMIUM`); :class:`ChromiumMissing` naming what
    to install when it is not an executable file."""
    browser = Path(path) if path else DEFAULT_CHROMIUM
    if not (browser.is_file() and os.access(browser, os.X_OK)):
        raise ChromiumMissing(f"Exporting figures needs Chromium, and there is none at {browser}: {INSTALL_HINT}")
    return browser


def export_size(name: str, figure: Mapping[str, Any]) -> tuple[int, int]:
    """(width, height) in CSS pixels of figure ``name``: the figure's own layout size where it sets one, else its
    width on the sweep page and :data:`DEFAULT_HEIGHT`."""
    layout = figure.get("layout") or {}
    width = layout.get("width") or (WIDE_FIGURE_WIDTH if name in WIDE_FIGURES else NARROW_FIGURE_WIDTH)
    return int(width), int(layout.get("height") or DEFAULT_HEIGHT)


def check_format(file_format: str) -> str:
    """``file_format`` when it is one of :data:`FIGURE_FORMATS`; ``ValueError`` naming the valid ones otherwise."""
    if file_format not in FIGURE_FORMATS:
        raise ValueError(f"Unknown figure format {file_format!r}; valid: {', '.join(FIGURE_FORMATS)}")
    return file_format


def render_figures(
    figures: Mapping[str, Mapping[str, Any]],
    formats: Sequence[str] = tuple(FIGURE_FORMATS),
    *,
    chromium: str | Path | None = None,
) -> dict[tuple[str, str], bytes]:
    """Every figure of ``figures`` (Plotly JSON dicts by name) in every format of ``formats``, drawn in one
    browser: ``{(name, format): bytes}``.

    Raises :class:`ChromiumMissing` when there is no browser at ``chromium`` (before starting anything) and
    :class:`FigureExportError` when the browser fails to start or to draw a figure. Call it from synchronous code
    (a worker thread of the API, the CLI): it runs its own event loop.
    """
    for file_format in formats:
        check_format(file_format)
    browser = chromium_or_error(chromium)
    jobs = [(name, file_format) for name in figures for file_format in formats]
    if not jobs:
        return {}
    with _browsers:
        return asyncio.run(_render(browser, figures, jobs))


def render_figure(
    figure: Mapping[str, Any], file_format: str, *, name: str = "", chromium: str | Path | None = None
) -> bytes:
    """One figure (a Plotly JSON dict, sized as figure ``name`` of the sweep page) in one format."""
    return render_figures({name: figure}, [file_format], chromium=chromium)[(name, file_format)]


async def _render(
    browser: Path, figures: Mapping[str, Mapping[str, Any]], jobs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], bytes]:
    import kaleido
    from kaleido.errors import (
        BrowserClosedError,
        BrowserFailedError,
        ChromeNotFoundError,
        JavascriptError,
        KaleidoError,
    )

    from dashboards.templating import plotly_js_path

    results: dict[tuple[str, str], bytes] = {}
    try:
        async with kaleido.Kaleido(
            n=1, timeout=RENDER_TIMEOUT_SECONDS, path=str(browser), plotlyjs=str(plotly_js_path()), mathjax=False
        ) as renderer:
            for name, file_format in jobs:
                width, height = export_size(name, figures[name])
                options = {"format": file_format, "width": width, "height": height, "scale": 1}
                results[(name, file_format)] = await renderer.calc_fig(dict(figures[name]), opts=options)
    except ChromeNotFoundError as exc:
        raise ChromiumMissing(f"Chromium at {browser} could not be started ({exc}): {INSTALL_HINT}") from None
    except (BrowserFailedError, BrowserClosedError) as exc:
        raise FigureExportError(f"Chromium at {browser} failed while exporting figures: {exc}") from None
    except (KaleidoError, JavascriptError, TimeoutError) as exc:
        raise FigureExportError(f"Chromium could not draw a figure: {type(exc).__name__}: {exc}") from None
    return results


def figure_filename(sweep_id: str, name: str, file_format: str) -> str:
    """The file a figure is saved as: ``nero-study-<sweep>-<figure>.<format>``."""
    return f"nero-study-{sweep_id}-{name}.{file_format}"


def write_figures(
    figures: Mapping[str, Mapping[str, Any]],
    directory: str | Path,
    *,
    sweep_id: str,
    formats: Sequence[str] = tuple(FIGURE_FORMATS),
    chromium: str | Path | None = None,
) -> list[Path]:
    """Write every figure in every format into ``directory`` (created), named by :func:`figure_filename`;
    returns the paths, figure by figure in the order of ``figures``. Nothing is written when rendering fails."""
    rendered = render_figures(figures, formats, chromium=chromium)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for (name, file_format), content in rendered.items():
        path = target / figure_filename(sweep_id, name, file_format)
        path.write_bytes(content)
        paths.append(path)
    return paths


__all__ = [
    "DEFAULT_CHROMIUM",
    "FIGURE_FORMATS",
    "ChromiumMissing",
    "FigureExportError",
    "check_format",
    "chromium_or_error",
    "export_size",
    "figure_filename",
    "render_figure",
    "render_figures",
    "write_figures",
]
