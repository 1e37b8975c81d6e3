"""What the figures share: fixed colours, the order of optimisers and statuses, the finished trials."""

from __future__ import annotations

import pandas as pd

from dashboards.common import (
    KNOWN_OPTIMIZER_COLORS,
    STATUS_COLORS,
    STATUS_ORDER,
    finished_trials,
    label_order,
    optimizer_colors,
    spec_labels,
    wants_log_axis,
)
from nero_study.study.analysis import analyze_sweep
from nero_study.vocabulary import TRIAL_STATUSES


def test_optimizer_colors_are_fixed_and_distinct() -> None:
    colors = optimizer_colors(["adam", "nero", "nero-unconstrained", "my-variant"])
    assert colors["nero"] == KNOWN_OPTIMIZER_COLORS["nero"]
    assert colors["adam"] == KNOWN_OPTIMIZER_COLORS["adam"]
    assert len(set(colors.values())) == 4
    # The same label keeps its colour whatever the order (and so on every figure and page).
    again = optimizer_colors(["my-variant", "nero-unconstrained", "nero", "adam"])
    assert again == colors


def test_every_trial_status_has_a_place_and_a_colour() -> None:
    assert sorted(STATUS_ORDER) == sorted(TRIAL_STATUSES) == sorted(STATUS_COLORS)
    assert STATUS_ORDER[:3] == ("succeeded", "diverged", "failed") and STATUS_ORDER[-1] == "pending"


def test_spec_labels_and_label_order(known_trials: pd.DataFrame) -> None:
    spec = {"optimizers": ["adam", {"name": "nero", "label": "nero-x"}, {"name": "sgd"}, "adam", ""]}
    assert spec_labels(spec) == ("adam", "nero-x", "sgd")
    assert spec_labels(None) == ()
    # The spec's order first, then any label found in the trials (here nero, not in the given order).
    assert label_order(analyze_sweep(known_trials), ("adam", "sgd")) == ("adam", "sgd", "nero")


def test_finished_trials_fill_in_the_label() -> None:
    frame = pd.DataFrame(
        [
            {"optimizer": "nero", "label": None, "status": "succeeded"},
            {"optimizer": "adam", "label": "adam-x", "status": "diverged"},
            {"optimizer": "sgd", "label": "", "status": "running"},
        ]
    )
    finished = finished_trials(frame)
    assert list(finished["label"]) == ["nero", "adam-x"]  # the running trial is not finished
    assert len(finished_trials(None)) == 0


def test_wants_log_axis() -> None:
    assert wants_log_axis([5.0, 200.0, None])  # 40x, all positive
    assert not wants_log_axis([5.0, 50.0])  # 10x
    assert not wants_log_axis([-1.0, 100.0]) and not wants_log_axis([])
