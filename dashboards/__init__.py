"""Dashboards of a learning-rate sweep: figure data, Plotly figures, HTML pages and a single-file report.

- :mod:`dashboards.data`: the numbers behind each figure and table (small NamedTuples), computed from a sweep's
  trials frame and its :class:`~nero_study.study.analysis.SweepAnalysis`, and one loader that reads a sweep
  through :mod:`nero_study.store.repo`.
- :mod:`dashboards.figures`: Plotly builders that only draw (``plot_lr_sensitivity(info) -> go.Figure``).
- :mod:`dashboards.pages`: server-side HTML (Jinja2) of the sweep list, sweep, trial and compare pages.
- :mod:`dashboards.report`: :func:`~dashboards.report.write_html_report`, one self-contained HTML file.

This package imports ``nero_study`` only and never touches the network: plotly.js comes from the installed
``plotly`` package. The HTTP routes that serve the pages live in ``api/routes/pages.py``.
"""

from dashboards.data import SweepSnapshot, load_sweep_snapshot

__all__ = ["SweepSnapshot", "load_sweep_snapshot"]
