"""The sweep engine end to end on real Ray Tune and a real SQLite store, at the smoke budget."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nero_study.store import db, repo
from nero_study.study.engine import SweepEngine
from nero_study.study.spec import SweepSpec

pytestmark = pytest.mark.usefixtures("ray_session")


def _factory(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'engine.db'}"
    db.upgrade(url)
    return url, db.session_factory(db.make_engine(url))


def _run(factory, spec: SweepSpec, **kwargs):
    with factory() as session:
        sweep = repo.create_sweep(session, spec=spec.model_dump(mode="json"), name=spec.name or "t")[0]
    engine = SweepEngine(session_factory=factory, sweep_id=sweep.id, spec=spec, **kwargs)
    return sweep.id, engine.run()


def test_grid_sweep_stores_every_trial_with_its_curve(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": ["nero", "adam"],
            "lrs": [0.01, 10.0],
            "budget": "smoke",
            "execution": "packed",
        }
    )
    _, factory = _factory(tmp_path)
    sweep_id, outcome = _run(factory, spec)
    assert outcome.status == "succeeded"
    assert outcome.execution == "packed"
    with factory() as session:
        trials, total = repo.list_trials(session, sweep_id=sweep_id, limit=100)
        assert total == spec.trial_count() == 5  # adam's default 0.001 joins its grid
        by_key = {(t.label, t.lr): t for t in trials}
        assert by_key[("adam", 10.0)].status == "diverged"
        good = by_key[("nero", 0.01)]
        assert good.status == "succeeded" and 0 <= good.metric < 0.9
        curve = repo.trial_curve(session, trial_id=good.id)
        assert curve[0]["step"] == 0 and len(curve) >= 2
        assert curve[-1]["metric"] == pytest.approx(good.metric)
        assert all(t.status in {"succeeded", "diverged"} for t in trials)


def test_rerun_of_the_same_sweep_runs_only_unfinished_trials(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {"tasks": ["digits-mlp"], "optimizers": ["sgd"], "lrs": [0.1, 0.3], "budget": "smoke", "execution": "separate"}
    )
    _, factory = _factory(tmp_path)
    sweep_id, _ = _run(factory, spec)
    with factory() as session:
        first = {t.id: (t.finished_at, t.metric) for t in repo.list_trials(session, sweep_id=sweep_id)[0]}
    outcome = SweepEngine(session_factory=factory, sweep_id=sweep_id, spec=spec, attempt=2).run()
    assert outcome.status == "succeeded"
    with factory() as session:
        again = {t.id: (t.finished_at, t.metric) for t in repo.list_trials(session, sweep_id=sweep_id)[0]}
    assert again == first  # nothing re-run, nothing added


def test_paper_protocol_repeats_the_best_lr_with_further_seeds(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": ["nero"],
            "lrs": [0.001, 0.01],
            "seeds": [0, 1],
            "protocol": "paper",
            "budget": "smoke",
        }
    )
    _, factory = _factory(tmp_path)
    sweep_id, outcome = _run(factory, spec)
    assert outcome.status == "succeeded"
    with factory() as session:
        trials = repo.list_trials(session, sweep_id=sweep_id)[0]
    grid = [t for t in trials if t.phase == "grid"]
    repeats = [t for t in trials if t.phase == "seeds"]
    assert {(t.lr, t.seed) for t in grid} == {(0.001, 0), (0.01, 0)}
    best = min(grid, key=lambda t: t.metric)
    assert [(t.lr, t.seed) for t in repeats] == [(best.lr, 1)]


def test_tpe_protocol_runs_n_trials_per_pair_within_the_grid_ends(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": ["adam"],
            "lrs": {"min": 1e-4, "max": 1e-1, "points_per_decade": 1},
            "protocol": "tpe",
            "tpe_trials": 3,
            "budget": "smoke",
        }
    )
    _, factory = _factory(tmp_path)
    sweep_id, outcome = _run(factory, spec)
    assert outcome.status == "succeeded"
    with factory() as session:
        trials = repo.list_trials(session, sweep_id=sweep_id)[0]
    assert len(trials) == 3
    assert all(t.phase == "tpe" and 1e-4 <= t.lr <= 1e-1 for t in trials)
    # The default lr (adam: 0.001) is a fixed first trial, so the out-of-the-box point is always measured.
    assert min(trials, key=lambda t: t.id).lr == pytest.approx(0.001, rel=1e-12)
    assert all(t.status in {"succeeded", "diverged"} and math.isfinite(t.wall_s) for t in trials)


def test_cancel_stops_the_sweep(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "seeds": list(range(12)), "budget": "smoke"}
    )
    _, factory = _factory(tmp_path)
    done: list[int] = []  # the engine's progress reports: the cancel comes once the first trial has finished
    sweep_id, outcome = _run(
        factory,
        spec,
        on_progress=lambda progress: done.append(progress.done),
        should_cancel=lambda: any(done),
        cancel_check_seconds=0.0,  # ask at every result, so the stop comes at the first report after it
    )
    assert outcome.status == "stopped"
    with factory() as session:
        counts = repo.sweep_counts(session, sweep_id=sweep_id)
    finished = counts["succeeded"] + counts["diverged"] + counts["failed"]
    assert finished < 12


@pytest.mark.process  # a real worker process: `make test-processes`
def test_killed_cli_sweep_resumes_and_stores_each_trial_once(tmp_path: Path) -> None:
    """`nero-study sweep` killed with SIGKILL mid-run, then run again: it finishes, no duplicates."""
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        "name: kill-test\ntasks: [digits-mlp]\noptimizers: [nero, sgd]\nlrs: [0.01, 0.1]\n"
        "seeds: [0, 1, 2, 3, 4, 5]\nbudget: smoke\nexecution: separate\n"
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "NERO_STUDY_DATABASE_URL": url, "NERO_STUDY_LEASE_SECONDS": "3"}
    command = [sys.executable, "-m", "nero_study.cli", "sweep", str(spec_path)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    factory = db.session_factory(db.make_engine(url))
    deadline = time.monotonic() + 240
    finished = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            with factory() as session:
                sweeps, _ = repo.list_sweeps(session)
                if sweeps:
                    counts = repo.sweep_counts(session, sweep_id=sweeps[0].id)
                    finished = counts["succeeded"] + counts["diverged"] + counts["failed"]
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            continue
        if finished >= 2:
            break
    assert process.poll() is None, process.communicate()[0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    with factory() as session:
        sweep = repo.list_sweeps(session)[0][0]
        before = repo.sweep_counts(session, sweep_id=sweep.id)
    assert before["succeeded"] + before["diverged"] < 24, "the sweep ended before the kill: nothing was tested"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert sweep.id in rerun.stdout
    with factory() as session:
        trials, total = repo.list_trials(session, sweep_id=sweep.id, limit=100)
        assert total == 24
        keys = [(t.label, t.lr, t.seed) for t in trials]
        assert len(set(keys)) == 24
        assert all(t.status in {"succeeded", "diverged"} for t in trials)
        assert repo.get_sweep(session, sweep_id=sweep.id).status == "succeeded"


def test_bracket_protocol_runs_rounds_past_the_grid_edge_and_records_them(tmp_path: Path) -> None:
    from nero_study.study.bracket import bracket_summaries
    from nero_study.study.plan import plan_bracket_round
    from nero_study.vocabulary import bracket_round

    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": ["nero"],
            "lrs": [1e-4, 1e-3],  # nero's default 0.01 joins: the coarse grid is 1e-4, 1e-3, 1e-2
            "protocol": "bracket",
            "bracket_max_lrs": 7,
            "budget": "smoke",
        }
    )
    _, factory = _factory(tmp_path)
    sweep_id, outcome = _run(factory, spec)
    assert outcome.status == "succeeded"
    with factory() as session:
        records = repo.trials_frame(session, sweep_id=sweep_id).to_dict("records")
        planned = repo.get_sweep(session, sweep_id=sweep_id).planned_trials
    assert planned == len(records)  # the count it ran, in place of the worst case
    rounds: dict[int, list[float]] = {}
    for row in records:
        rounds.setdefault(bracket_round(row["phase"]), []).append(row["lr"])
    assert sorted(rounds[0]) == [1e-4, 1e-3, 1e-2]
    # At the smoke budget nero learns most at the top of this coarse grid, so round 1 extends upward a decade.
    round_zero = [row for row in records if row["phase"] == "bracket-0"]
    assert min(round_zero, key=lambda row: row["metric"])["lr"] == 1e-2
    assert rounds[1] == [0.1]
    assert len(rounds) >= 3 and all(len(lrs) == 1 for index, lrs in rounds.items() if index > 0)
    assert len(records) <= spec.bracket_max_lrs and all(row["status"] in ("succeeded", "diverged") for row in records)
    # Each round's lr is the one the rule chooses from the rounds before it, and the last round left nothing to add.
    for index in range(1, len(rounds)):
        earlier = [row for row in records if bracket_round(row["phase"]) < index]
        assert [t.spec.lr for t in plan_bracket_round(spec, earlier)] == rounds[index]
    assert plan_bracket_round(spec, records) == []
    (summary,) = bracket_summaries(spec, records)
    assert summary.state != "running" and summary.lrs_used == len(records)
    assert summary.state.startswith(("resolved", "budget spent"))
    # Run again (a resumed sweep): the rounds are re-planned from what is stored, so nothing runs or is added.
    assert SweepEngine(session_factory=factory, sweep_id=sweep_id, spec=spec, attempt=2).run().status == "succeeded"
    with factory() as session:
        again = repo.trials_frame(session, sweep_id=sweep_id).to_dict("records")
    assert [(r["id"], r["phase"], r["finished_at"]) for r in again] == [
        (r["id"], r["phase"], r["finished_at"]) for r in records
    ]
