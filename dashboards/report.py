"""The single-file HTML report of a sweep (``nero-study report SWEEP_ID --html out.html``).

One self-contained file: the sweep page's figures and tables with plotly.js, the CSS and the script inlined,
so it opens anywhere with no server and no internet (it is about 5 MB, mostly plotly.js).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from dashboards.pages import render_report
from dashboards.snapshot import load_sweep_snapshot


def write_html_report(*, sweep_id: str, database_url: str, path: str | Path) -> Path:
    """Write the report of sweep ``sweep_id`` read from ``database_url`` to ``path``; returns the path.

    Raises ``KeyError`` for an unknown sweep. Parent directories are created.
    """
    from nero_study.store import db

    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as session:
            snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    finally:
        engine.dispose()
    if snapshot is None:
        raise KeyError(f"Unknown sweep {sweep_id!r}")
    html = render_report(snapshot, generated_at=datetime.now(UTC))
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html, encoding="utf-8")
    return target


__all__ = ["write_html_report"]
