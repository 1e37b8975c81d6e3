"""The ``bracket`` protocol's rounds on a sweep page, in its single-file report and in its live update, from a
hand-made bracket sweep whose rounds follow the rule (worked out in :data:`BRACKET_ROUNDS`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dashboards import pages
from nero_study.store import repo

NAN = math.nan
BRACKET_SPEC: dict[str, Any] = {
    "name": "bracket",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero"],
    "lrs": [0.0001, 0.001],
    "seeds": [0],
    "protocol": "bracket",
    "budget": "smoke",
    "bracket_max_lrs": 6,
    "bracket_resolution": 0.5,
}
#: (phase, lr, status, test error); chance 0.9. Round 0: the coarse grid with nero's default 0.01, best at its
#: top: round 1 extends a decade up, 0.1 diverges: 0.01 is inside, its better neighbour 0.001 (0.5 against
#: chance) -> round 2 adds their midpoint 0.00316228 (0.3); 0.01 is still best, its better neighbour now the
#: midpoint, half a decade away: resolved at 0.5 decades.
BRACKET_ROUNDS: tuple[tuple[str, float, str, float], ...] = (
    ("bracket-0", 0.0001, "succeeded", 0.8),
    ("bracket-0", 0.001, "succeeded", 0.5),
    ("bracket-0", 0.01, "succeeded", 0.2),
    ("bracket-1", 0.1, "diverged", NAN),
    ("bracket-2", 0.00316228, "succeeded", 0.3),
)


def store_rounds(session: Session, sweep_id: str, rounds: Sequence[tuple[str, float, str, float]]) -> None:
    """Store and finish one trial (seed 0) per (phase, lr, status, test error) of ``rounds``."""
    start = datetime.now(UTC) - timedelta(seconds=60)
    for index, (phase, lr, outcome, metric) in enumerate(rounds):
        item = {"task": "digits-mlp", "optimizer": "nero", "label": "nero", "lr": lr, "seed": 0, "budget": "smoke",
                "phase": phase}
        (row,) = repo.add_trials(session, sweep_id=sweep_id, trials=[item])
        now = start + timedelta(seconds=index + 1)
        repo.mark_trial_running(session, trial_id=row.id, attempt=1, now=now - timedelta(seconds=0.5))
        repo.finish_trial(
            session, trial_id=row.id, status=outcome, metric=metric, best_metric=metric, initial_metric=0.9,
            metric_name="test_error", lower_is_better=True, wall_s=0.5, device="cpu", steps=10,
            error="loss became nan" if outcome == "diverged" else None, attempt=1, now=now,
        )


def store_bracket_sweep(
    session: Session, *, status: str = "succeeded", rounds: Sequence[tuple[str, float, str, float]] = BRACKET_ROUNDS
) -> str:
    """The hand-made bracket sweep (its first ``rounds``), stored and finished (``running`` leaves it running);
    returns its id."""
    sweep = repo.create_sweep(session, spec=BRACKET_SPEC, name="bracket", planned_trials=6)[0]
    claimed = repo.claim_next_sweep(session, owner="tests", lease_seconds=3600)
    assert claimed is not None and claimed.id == sweep.id
    store_rounds(session, sweep.id, rounds)
    if status != "running":
        assert repo.finish_sweep(session, sweep_id=sweep.id, owner="tests", status=status)
    return sweep.id


def bracket_block(html: str) -> str:
    start = html.index('id="sweep-bracket"')
    return html[start : html.index("</table>", start)]


def test_sweep_page_and_report_show_the_lrs_each_round_added(client: TestClient, session: Session) -> None:
    sweep_id = store_bracket_sweep(session)
    for url in (f"/sweeps/{sweep_id}", f"/sweeps/{sweep_id}/report.html"):
        html = client.get(url).text
        assert "protocol bracket" in html
        block = bracket_block(html)
        row = block[block.index('data-bracket-label="nero"') :]
        assert 'data-rounds="3"' in row
        text = " ".join(row.split())
        assert '<span class="bracket-round" data-round="0"><b>0</b>: 0.0001, 0.001, 0.01</span>' in text
        assert '<span class="bracket-round" data-round="1"><b>1</b>: 0.1</span>' in text
        assert '<span class="bracket-round" data-round="2"><b>2</b>: 0.00316228</span>' in text
        assert "<td>5 of 6</td>" in text and "<td>0.00316228 – 0.1</td>" in text
        assert "resolved: best lr 0.01, its better neighbour 0.00316228 is 0.5 decades away (&lt;= 0.5)" in text


def test_a_live_bracket_page_updates_its_rounds_and_a_grid_sweep_has_none(
    client: TestClient, session: Session, make_sweep: Callable[..., str]
) -> None:
    from dashboards.snapshot import load_sweep_snapshot

    sweep_id = store_bracket_sweep(session, status="running")
    snapshot = load_sweep_snapshot(session, sweep_id=sweep_id)
    assert snapshot is not None
    fragment = pages.sweep_update(snapshot)["fragments"]["sweep-bracket"]
    assert '<span class="bracket-round" data-round="2"><b>2</b>: 0.00316228</span>' in " ".join(fragment.split())
    grid_id = make_sweep("grid")
    assert 'id="sweep-bracket"' not in client.get(f"/sweeps/{grid_id}").text


def test_the_lr_sensitivity_figure_names_the_round_that_added_each_lr(session: Session) -> None:
    from dashboards.lr_sensitivity import lr_sensitivity_info, plot_lr_sensitivity

    sweep_id = store_bracket_sweep(session)
    info = lr_sensitivity_info(repo.trials_frame(session, sweep_id=sweep_id))
    (series,) = info.panels[0].series
    assert series.lrs == (0.0001, 0.001, 0.00316228, 0.01, 0.1)
    assert series.rounds == (0, 0, 2, 0, 1)
    line = next(t for t in plot_lr_sensitivity(info).data if t.mode == "lines+markers")
    assert line.text[2] == "nero lr=0.00316228: 0.3 (1 seed; bracket round 2)"
    assert line.text[4] == "nero lr=0.1: — (1 seed, 1 diverged/failed; bracket round 1)"
