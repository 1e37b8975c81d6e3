"""Dashboards of a learning-rate sweep: figures, tables, HTML pages and a single-file report.

Laid out like Optuna's visualization package: one module per figure, holding its ``*_info`` function (the
numbers, in a small NamedTuple, tested on them) and its ``plot_*`` function (only draws: hover text, colours
and the spreading of overlapping marks belong there):

- :mod:`dashboards.lr_sensitivity`, :mod:`dashboards.ootb_vs_tuned`, :mod:`dashboards.normalized_score`,
  :mod:`dashboards.performance_profiles`, :mod:`dashboards.expected_best`, :mod:`dashboards.learning_curves`,
  :mod:`dashboards.progress` (also the progress bar);
- :mod:`dashboards.tables`: the paper-style table, the robustness metrics and the profile scores;
- :mod:`dashboards.common`: the palette, the order of optimisers and statuses, the finished trials;
- :mod:`dashboards.drawing`: what every ``plot_*`` shares (template, layout, log ticks, marks, empty figure);
- :mod:`dashboards.snapshot`: a sweep read from the store at one moment (:func:`load_sweep_snapshot`);
- :mod:`dashboards.templating` and :mod:`dashboards.pages`: the Jinja2 environment and the HTML pages;
- :mod:`dashboards.report`: :func:`~dashboards.report.write_html_report`, one self-contained HTML file.

Every ``*_info`` takes a sweep's trials (the frame of :func:`nero_study.store.repo.trials_frame`) and/or its
:class:`~nero_study.study.analysis.SweepAnalysis`; no data gives an info with a ``note`` and an empty figure
that says it. This package imports ``nero_study`` only and never touches the network: plotly.js comes from the
installed ``plotly`` package. The HTTP routes that serve the pages live in ``api/routes/pages.py``.
"""

from dashboards.expected_best import expected_best_info, plot_expected_best
from dashboards.learning_curves import learning_curves_info, plot_learning_curves
from dashboards.lr_sensitivity import lr_sensitivity_info, plot_lr_sensitivity
from dashboards.normalized_score import normalized_score_info, plot_normalized_heatmap
from dashboards.ootb_vs_tuned import ootb_vs_tuned_info, plot_ootb_vs_tuned
from dashboards.performance_profiles import performance_profile_info, plot_performance_profiles
from dashboards.progress import plot_sweep_progress, sweep_progress_info
from dashboards.snapshot import SweepSnapshot, load_sweep_snapshot

__all__ = [
    "SweepSnapshot",
    "expected_best_info",
    "learning_curves_info",
    "load_sweep_snapshot",
    "lr_sensitivity_info",
    "normalized_score_info",
    "ootb_vs_tuned_info",
    "performance_profile_info",
    "plot_expected_best",
    "plot_learning_curves",
    "plot_lr_sensitivity",
    "plot_normalized_heatmap",
    "plot_ootb_vs_tuned",
    "plot_performance_profiles",
    "plot_sweep_progress",
    "sweep_progress_info",
]
