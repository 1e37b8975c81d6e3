"""What every figure and table of the dashboards shares: the palette, the order of optimisers and statuses, and
the few helpers that read a sweep's trials frame the way the analysis does.

- Colours are fixed per optimiser label (:func:`optimizer_colors`), so every figure and page agrees.
- Optimisers appear in spec order, then any other label the analysis found (:func:`label_order`).
- Only finished trials (:data:`~nero_study.vocabulary.TRIAL_FINISHED`) count, as in the analysis.
- ``None`` stands for "no number" (JSON null, a gap in a Plotly line).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from nero_study.study.analysis import OptimizerSummary, SweepAnalysis
from nero_study.vocabulary import TRIAL_FINISHED, TrialStatus

#: Fixed colours of the optimisers of the study (the same on every figure and page).
KNOWN_OPTIMIZER_COLORS: dict[str, str] = {
    "nero": "#d62728",
    "sgd": "#1f77b4",
    "adam": "#2ca02c",
    "lamb": "#9467bd",
    "madam": "#8c564b",
}
#: Colours for other labels (variants such as ``nero-unconstrained``), picked by a stable hash of the label.
EXTRA_COLORS: tuple[str, ...] = (
    "#ff7f0e",
    "#17becf",
    "#e377c2",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
)
#: Colours of trial statuses (progress bars and the progress figure).
STATUS_COLORS: dict[TrialStatus, str] = {
    "succeeded": "#2ca02c",
    "diverged": "#ff7f0e",
    "failed": "#d62728",
    "cancelled": "#7f7f7f",
    "running": "#1f77b4",
    "pending": "#c7c7c7",
}
#: Order of statuses in progress bars and stacked figures: results first, then work in flight, then queued.
STATUS_ORDER: tuple[TrialStatus, ...] = (*TRIAL_FINISHED, "cancelled", "running", "pending")
#: At most this many points per drawn curve (learning curves, progress over time).
MAX_CURVE_POINTS = 200
#: A positive metric spanning at least this ratio (max/min) is drawn on a log y axis (e.g. perplexities).
LOG_METRIC_RATIO = 20.0


def wants_log_axis(values: Iterable[float | None]) -> bool:
    """Whether values are best drawn on a log axis: all positive, spanning at least ``LOG_METRIC_RATIO``."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= LOG_METRIC_RATIO


def optimizer_colors(labels: Iterable[str]) -> dict[str, str]:
    """A colour per optimiser label: the study's optimisers have fixed colours, other labels a hashed one.

    The result depends only on the set of labels, so every figure drawn for the same labels agrees; two
    other labels that hash to the same colour get the next free one.
    """
    unique = list(dict.fromkeys(labels))
    colors: dict[str, str] = {}
    used: set[str] = set()
    for label in unique:
        if label in KNOWN_OPTIMIZER_COLORS:
            colors[label] = KNOWN_OPTIMIZER_COLORS[label]
            used.add(colors[label])
    for label in sorted(label for label in unique if label not in colors):
        start = zlib.crc32(label.encode()) % len(EXTRA_COLORS)
        for offset in range(len(EXTRA_COLORS)):
            candidate = EXTRA_COLORS[(start + offset) % len(EXTRA_COLORS)]
            if candidate not in used:
                break
        else:  # more labels than colours: reuse the hashed one
            candidate = EXTRA_COLORS[start]
        colors[label] = candidate
        used.add(candidate)
    return {label: colors[label] for label in unique}


def color_of(colors: Mapping[str, str], label: str) -> str:
    """``label``'s colour in ``colors`` (a label missing there gets the first extra colour)."""
    return colors.get(label, EXTRA_COLORS[0])


def spec_labels(spec: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The optimiser labels of a stored sweep spec, in spec order (a plain name is its own label)."""
    labels = []
    for variant in (spec or {}).get("optimizers", []) or []:
        if isinstance(variant, Mapping):
            label = variant.get("label") or variant.get("name")
        else:
            label = variant
        if isinstance(label, str) and label:
            labels.append(label)
    return tuple(dict.fromkeys(labels))


def label_order(analysis: SweepAnalysis, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """``labels`` (e.g. the spec's order) followed by any other label the analysis has, in its order."""
    seen = list(labels or ())
    for summary in analysis.per_optimizer:
        if summary.label not in seen:
            seen.append(summary.label)
    return tuple(seen)


def summaries_by_task_and_label(analysis: SweepAnalysis) -> dict[tuple[str, str], OptimizerSummary]:
    """The analysis's per-optimiser summaries keyed by (task, label)."""
    return {(summary.task, summary.label): summary for summary in analysis.per_optimizer}


def _label_column(trials: pd.DataFrame) -> pd.Series:
    """Each trial's optimiser label (its optimiser's name where the label is missing), as the analysis does."""
    optimizer = trials["optimizer"] if "optimizer" in trials else pd.Series("", index=trials.index)
    if "label" not in trials:
        return optimizer.fillna("").astype(str)
    label = trials["label"]
    empty = label.isna() | (label.astype(str) == "")
    return label.where(~empty, optimizer).fillna("").astype(str)


def finished_trials(trials: pd.DataFrame | None) -> pd.DataFrame:
    """The finished trials (succeeded, diverged, failed) with a ``label`` column filled in."""
    if trials is None or len(trials) == 0 or "status" not in trials:
        return pd.DataFrame(columns=["task", "label", "lr", "seed", "status", "metric"])
    frame = trials[trials["status"].isin(TRIAL_FINISHED)].copy()
    frame["label"] = _label_column(frame)
    return frame


__all__ = [
    "EXTRA_COLORS",
    "KNOWN_OPTIMIZER_COLORS",
    "LOG_METRIC_RATIO",
    "MAX_CURVE_POINTS",
    "STATUS_COLORS",
    "STATUS_ORDER",
    "color_of",
    "finished_trials",
    "label_order",
    "optimizer_colors",
    "spec_labels",
    "summaries_by_task_and_label",
    "wants_log_axis",
]
