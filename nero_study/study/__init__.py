"""Sweeps: the spec (what to run), the plan (spec -> trials) and the analysis (robustness metrics)."""

from nero_study.study.analysis import (
    LrPoint,
    OptimizerSummary,
    PaperTableRow,
    PerformanceProfile,
    SweepAnalysis,
    TaskSummary,
    analyze_sweep,
    expected_best_of_k,
    paper_table,
    performance_ratio,
    profile_score,
)
from nero_study.study.plan import (
    PlannedTrial,
    best_lrs,
    count_trials,
    make_trial_spec,
    plan_seed_repeats,
    plan_trials,
    tpe_space,
)
from nero_study.study.spec import LogGrid, OptimizerVariant, Resources, SweepSpec, demo_spec, log_grid

__all__ = [
    "LogGrid",
    "LrPoint",
    "OptimizerSummary",
    "OptimizerVariant",
    "PaperTableRow",
    "PerformanceProfile",
    "PlannedTrial",
    "Resources",
    "SweepAnalysis",
    "SweepSpec",
    "TaskSummary",
    "analyze_sweep",
    "best_lrs",
    "count_trials",
    "demo_spec",
    "expected_best_of_k",
    "log_grid",
    "make_trial_spec",
    "paper_table",
    "performance_ratio",
    "plan_seed_repeats",
    "plan_trials",
    "profile_score",
    "tpe_space",
]
