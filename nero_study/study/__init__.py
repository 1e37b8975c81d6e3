"""Sweeps: the spec (what to run), the plan (spec -> trials) and the analysis (robustness metrics).

Names are imported lazily (PEP 562), so that a Ray worker importing ``nero_study.study.trainables`` does not
pay for pandas and pydantic models it never uses.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    **{
        name: "nero_study.study.analysis"
        for name in (
            "LrPoint",
            "OptimizerSummary",
            "PaperTableRow",
            "PerformanceProfile",
            "SweepAnalysis",
            "TaskSummary",
            "analyze_sweep",
            "expected_best_of_k",
            "paper_table",
            "performance_ratio",
            "profile_score",
        )
    },
    **{
        name: "nero_study.study.plan"
        for name in (
            "PlannedTrial",
            "best_lrs",
            "count_trials",
            "make_trial_spec",
            "plan_seed_repeats",
            "plan_trials",
            "tpe_space",
        )
    },
    **{
        name: "nero_study.study.spec"
        for name in ("LogGrid", "OptimizerVariant", "Resources", "SweepSpec", "demo_spec", "log_grid")
    },
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nero_study.study' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
