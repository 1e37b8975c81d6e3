"""The single-file HTML report of a sweep (``nero-study report SWEEP_ID --html out.html``), and its figures as
SVG and PDF files (``nero-study report SWEEP_ID --figures DIR``).

One self-contained file: the sweep page's figures and tables with plotly.js, the CSS and the script inlined,
so it opens anywhere with no server and no internet (it is about 5 MB, mostly plotly.js).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dashboards.pages import render_report, sweep_figures
from dashboards.snapshot import SweepSnapshot, load_sweep_snapshot


def _snapshot(sweep_id: str, database_url: str) -> SweepSnapshot:
    from nero_study.store import db

    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as session:
            snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    finally:
        engine.dispose()
    if snapshot is None:
        raise KeyError(f"Unknown sweep {sweep_id!r}")
    return snapshot


def write_html_report(*, sweep_id: str, database_url: str, path: str | Path) -> Path:
    """Write the report of sweep ``sweep_id`` read from ``database_url`` to ``path``; returns the path.

    Raises ``KeyError`` for an unknown sweep. Parent directories are created.
    """
    html = render_report(_snapshot(sweep_id, database_url), generated_at=datetime.now(UTC))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, encoding="utf-8")
    return target


def write_figure_files(
    *, sweep_id: str, database_url: str, directory: str | Path, chromium: str | Path | None = None
) -> list[Path]:
    """Write every figure of the sweep page as SVG and PDF into ``directory`` (created), named
    ``nero-study-<sweep>-<figure>.<format>``; returns the paths.

    Raises ``KeyError`` for an unknown sweep, :class:`~dashboards.figure_export.ChromiumMissing` when there is no
    browser at ``chromium`` and :class:`~dashboards.figure_export.FigureExportError` when it fails to draw.
    """
    from dashboards.figure_export import write_figures

    snapshot = _snapshot(sweep_id, database_url)
    return write_figures(sweep_figures(snapshot), directory, sweep_id=snapshot.id, chromium=chromium)


__all__ = ["write_figure_files", "write_html_report"]
