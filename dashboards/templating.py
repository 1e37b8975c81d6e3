"""The Jinja2 side of the pages: the templates in ``dashboards/templates``, their filters (numbers, learning rates,
percentages, times, durations), the static files, and how a page gets its CSS and scripts (linked from the
app, or inlined for the single-file report). plotly.js is the file shipped inside the installed ``plotly``
package, so no page needs the internet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from dashboards.common import STATUS_COLORS, STATUS_ORDER
from nero_study.formatting import MISSING, format_number

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The dashboards' own static files (served at ``/static/<name>``).
STATIC_FILES: tuple[str, ...] = ("dashboards.css", "dashboards.js")
PLOTLY_JS = "plotly.min.js"
_SCRIPT_END = "</" + "script"


def plotly_js_path() -> Path:
    """plotly.min.js inside the installed ``plotly`` package (the version that built the figures)."""
    import plotly

    return Path(plotly.__file__).resolve().parent / "package_data" / PLOTLY_JS


def static_path(name: str) -> Path | None:
    """The file served at ``/static/<name>``: plotly.js from the plotly package or one of ours; else ``None``."""
    if name == PLOTLY_JS:
        return plotly_js_path()
    if name in STATIC_FILES:
        return STATIC_DIR / name
    return None


def _lr(value: Any) -> str:
    return format_number(value, "g")


def _percent(value: Any) -> str:
    """A fraction as a percentage (``0.125`` -> ``12.5%``)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return format_number(value)
    return format_number(100.0 * value, ".1f") + "%"


def _when(value: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SS UTC``; ``—`` when missing (None, NaT)."""
    if value is None or value != value:  # NaT is not equal to itself
        return MISSING
    if not isinstance(value, datetime):
        return str(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    """Seconds as ``12.3 s``, ``4.5 min`` or ``1.2 h``; ``—`` when missing or not finite."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return MISSING
    seconds = float(seconds)
    if seconds < 120:
        return format_number(seconds, ".1f") + " s"
    if seconds < 7200:
        return format_number(seconds / 60, ".1f") + " min"
    return format_number(seconds / 3600, ".1f") + " h"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the dashboards' templates (HTML autoescaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(("html",), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=format_number, lr=_lr, percent=_percent, when=_when, duration=_duration)
    env.globals.update(status_colors=STATUS_COLORS, status_order=STATUS_ORDER)
    return env


@dataclass(frozen=True)
class Assets:
    """How a page gets its CSS and scripts: links under ``root`` (served pages) or inlined (the report)."""

    root: str = ""
    inline: bool = False
    css: str = ""
    js: str = ""
    plotly_js: str = ""


def served_assets(root: str = "") -> Assets:
    """Assets for pages served by the app mounted at ``root`` (e.g. ``""`` or ``"/nero"``)."""
    return Assets(root=root.rstrip("/"))


def inline_assets() -> Assets:
    """Everything inlined (plotly.js included) for a single self-contained HTML file."""
    plotly_js = plotly_js_path().read_text(encoding="utf-8").replace(_SCRIPT_END, "<\\/script")
    return Assets(
        inline=True,
        css=(STATIC_DIR / "dashboards.css").read_text(encoding="utf-8"),
        js=(STATIC_DIR / "dashboards.js").read_text(encoding="utf-8").replace(_SCRIPT_END, "<\\/script"),
        plotly_js=plotly_js,
    )


def render(template: str, **context: Any) -> str:
    """The HTML of ``template`` with ``context``."""
    return environment().get_template(template).render(**context)


def render_fragments(template: str, names: Sequence[str], **context: Any) -> dict[str, str]:
    """The HTML of each macro ``names`` (``sweep-summary`` is the macro ``sweep_summary``) of ``template``."""
    module = environment().get_template(template).make_module(context)
    return {name: str(getattr(module, name.replace("-", "_"))()) for name in names}


__all__ = [
    "PLOTLY_JS",
    "STATIC_FILES",
    "Assets",
    "environment",
    "inline_assets",
    "plotly_js_path",
    "render",
    "render_fragments",
    "served_assets",
    "static_path",
]
