"""A sweep's progress: trials by status over time, the stacked figure, and the progress bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from dashboards.common import STATUS_COLORS
from dashboards.progress import plot_sweep_progress, progress_bar, sweep_progress_info


def test_sweep_progress_over_time() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else t0 + timedelta(seconds=seconds)

    # A: created 0, started 10, succeeded 20. B: created 0, started 15, running. C: created 5, pending.
    # D: created 0, cancelled at 12 without starting.
    trials = pd.DataFrame(
        [
            {"status": "succeeded", "created_at": at(0), "started_at": at(10), "finished_at": at(20)},
            {"status": "running", "created_at": at(0), "started_at": at(15), "finished_at": at(None)},
            {"status": "pending", "created_at": at(5), "started_at": at(None), "finished_at": at(None)},
            {"status": "cancelled", "created_at": at(0), "started_at": at(None), "finished_at": at(12)},
        ]
    )
    info = sweep_progress_info(trials)
    assert info.times == tuple(at(s) for s in (0, 5, 10, 12, 15, 20))
    assert info.counts["pending"] == (3, 4, 3, 2, 1, 1)
    assert info.counts["running"] == (0, 0, 1, 1, 2, 1)
    assert info.counts["cancelled"] == (0, 0, 0, 1, 1, 1)
    assert info.counts["succeeded"] == (0, 0, 0, 0, 0, 1)
    assert info.total == 4
    sampled = sweep_progress_info(trials, max_points=3)
    assert len(sampled.times) == 3 and sampled.times[0] == at(0) and sampled.times[-1] == at(20)


def test_a_requeued_trial_with_a_finish_time_counts_as_cancelled_from_then() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    trials = pd.DataFrame(
        [{"status": "pending", "created_at": t0, "started_at": t0, "finished_at": t0 + timedelta(seconds=4)}]
    )
    info = sweep_progress_info(trials)
    assert info.counts["running"] == (1, 0) and info.counts["cancelled"] == (0, 1)


def test_sweep_progress_stacked_by_status() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    trials = pd.DataFrame(
        [
            {
                "status": "succeeded",
                "created_at": t0,
                "started_at": t0 + timedelta(seconds=1),
                "finished_at": t0 + timedelta(seconds=2),
            },
            {
                "status": "diverged",
                "created_at": t0,
                "started_at": t0 + timedelta(seconds=1),
                "finished_at": t0 + timedelta(seconds=3),
            },
        ]
    )
    fig = plot_sweep_progress(sweep_progress_info(trials))
    names = [t.name for t in fig.data]
    assert names == ["succeeded", "diverged", "running", "pending"]
    assert {t.stackgroup for t in fig.data} == {"trials"}
    succeeded = fig.data[0]
    assert list(succeeded.y) == [0, 0, 1, 1]
    assert succeeded.line.color == STATUS_COLORS["succeeded"]


def test_progress_bar() -> None:
    counts = {"succeeded": 3, "diverged": 1, "failed": 0, "running": 1, "pending": 5, "cancelled": 0}
    bar = progress_bar(counts, planned=12)
    # 12 planned (more than the 10 stored): 4 done = 33.3%; segments for the non-empty statuses but pending.
    assert (bar.total, bar.done) == (12, 4)
    assert bar.percent_done == pytest.approx(100 / 3)
    assert [(s.status, s.count) for s in bar.segments] == [("succeeded", 3), ("diverged", 1), ("running", 1)]
    assert bar.segments[0].percent == pytest.approx(25.0)
    assert progress_bar({}, planned=None).percent_done == 0.0
