"""Warm runners (``nero_study.study.pool``): sweeps after the first reuse the same trial processes.

Real Ray Tune and a real SQLite store. Every test closes its pool, so the session's Ray has its CPUs
back for the next test.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from nero_study.store import db, repo
from nero_study.store.models import Trial
from nero_study.study.cluster import pool_shape
from nero_study.study.engine import SweepEngine
from nero_study.study.pool import WarmPool
from nero_study.study.spec import Resources, SweepSpec

pytestmark = pytest.mark.usefixtures("ray_session")

SPEC = {
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "adam"],
    "lrs": [0.01, 10.0],
    "budget": "smoke",
    "execution": "packed",
}


@pytest.fixture
def pool() -> Iterator[WarmPool]:
    """Runners for the default per-trial resources, as a worker starts them."""
    runners = WarmPool(pool_shape(Resources()))
    yield runners
    runners.close()


def _factory(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    db.upgrade(url)
    return db.session_factory(db.make_engine(url))


def _run(factory, spec: SweepSpec, **kwargs):
    with factory() as session:
        sweep = repo.create_sweep(session, spec=spec.model_dump(mode="json"), name="t")[0]
    outcome = SweepEngine(session_factory=factory, sweep_id=sweep.id, spec=spec, **kwargs).run()
    with factory() as session:
        trials, _ = repo.list_trials(session, sweep_id=sweep.id, limit=1000)
    return outcome, {(t.task, t.label, t.lr, t.seed): t for t in trials}


def _seeds(count: int) -> SweepSpec:
    """``count`` packed proxy trials of about a second each (90 epochs: Nero's fused step runs the proxy's 30 in
    about 0.4 s here): long enough to stop or kill mid-sweep."""
    return SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": ["nero"],
            "lrs": [0.01],
            "seeds": list(range(count)),
            "budget": "proxy",
            "execution": "packed",
            "task_options": {"digits-mlp": {"epochs": 90}},
        }
    )


def _same_results(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key, trial in left.items():
        other = right[key]
        assert trial.status == other.status, key
        # The same trial on the same CPU with one torch thread in both paths: bit for bit the same result.
        if math.isfinite(trial.metric):
            assert trial.metric == other.metric, key
        else:
            assert not math.isfinite(other.metric), key


def test_later_sweeps_run_in_the_same_processes_and_match_a_fresh_tune_run(tmp_path: Path) -> None:
    factory = _factory(tmp_path)
    spec = SweepSpec.model_validate(SPEC)
    fresh, fresh_trials = _run(factory, spec)  # one Tune experiment for this sweep alone, before runners hold slots
    pool = WarmPool(pool_shape(Resources()))
    try:
        first, first_trials = _run(factory, spec, pool=pool)
        assert pool.wait_until_warm(60)  # a runner may still be starting if the other took every trial
        pids = pool.runner_pids()
        second, second_trials = _run(factory, spec, pool=pool)
        assert len(pids) == 2 and pool.runner_pids() == pids  # no new process for the second sweep
    finally:
        pool.close()

    assert fresh.status == first.status == second.status == "succeeded"
    assert first.execution == second.execution == "packed"
    _same_results(first_trials, fresh_trials)
    _same_results(second_trials, fresh_trials)
    with factory() as session:  # curves are stored as on the fresh path
        for key, trial in second_trials.items():
            curve = repo.trial_curve(session, trial_id=trial.id)
            assert len(curve) == len(repo.trial_curve(session, trial_id=fresh_trials[key].id)) >= 1


def test_cancel_withdraws_the_sweep_and_keeps_the_runners_warm(tmp_path: Path, pool: WarmPool) -> None:
    factory = _factory(tmp_path)
    long = _seeds(12)  # the stop comes while trials still run and wait
    done: list[int] = []
    outcome, trials = _run(
        factory,
        long,
        pool=pool,
        on_progress=lambda progress: done.append(progress.done),
        should_cancel=lambda: bool(done) and done[-1] >= 2,
    )
    assert outcome.status == "stopped"
    finished = [t for t in trials.values() if t.status in {"succeeded", "diverged", "failed"}]
    assert 0 < len(finished) < 12
    assert all(t.status == "succeeded" for t in finished)  # the stop fails nothing
    assert pool.wait_until_warm(60)
    pids = pool.runner_pids()

    after, after_trials = _run(factory, SweepSpec.model_validate(SPEC), pool=pool)
    assert after.status == "succeeded"
    assert all(t.status in {"succeeded", "diverged"} for t in after_trials.values())
    assert pool.runner_pids() == pids


def test_a_killed_runner_is_restarted_and_its_bundle_run_again(tmp_path: Path, pool: WarmPool) -> None:
    """A runner process killed mid-bundle (as the OOM killer would): Tune restarts it, nothing is lost."""
    factory = _factory(tmp_path)
    warm_up, _ = _run(factory, SweepSpec.model_validate(SPEC), pool=pool)
    assert warm_up.status == "succeeded" and pool.wait_until_warm(60)
    victim = min(pool.runner_pids())
    spec = _seeds(8)
    killed = []

    def kill_once(progress) -> None:  # called when the store has taken a batch of events
        if not killed and progress.counts["running"] >= 2:  # both runners are inside a trial: the victim too
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    outcome, trials = _run(factory, spec, pool=pool, on_progress=kill_once)
    assert killed, "the sweep ended before the runner could be killed"
    assert outcome.status == "succeeded"
    assert sorted(t.seed for t in trials.values()) == list(range(8))
    assert all(t.status == "succeeded" for t in trials.values())
    # The victim's replacement starts whether or not the sweep still needs it; the sweep may end first
    # (its bundle rerun on the other runner), so wait for the replacement to report its pid (a failsafe limit).
    deadline = time.monotonic() + 60
    while len(pool.runner_pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = pool.runner_pids()
    assert victim in pids and len(pids) == 3  # the two first runners and the victim's replacement
    assert pool.retries == 1


def test_the_dispatcher_reruns_a_dead_runners_bundle_elsewhere_then_gives_it_up() -> None:
    """The queue's bookkeeping alone (no Ray): retries of interrupted bundles, withdrawn ones, closing."""
    import asyncio

    from nero_study.study.pool import Dispatcher

    async def scenario() -> None:
        dispatcher = Dispatcher(max_retries=1)
        await dispatcher.put([{"bundle_id": "a"}, {"bundle_id": "b"}])
        assert (await dispatcher.take(0))["bundle_id"] == "a"
        await dispatcher.runner_gone(0)  # Tune gave up on runner 0 mid-bundle: "a" goes back in the queue
        assert (await dispatcher.take(1))["bundle_id"] == "b"
        await dispatcher.finish(1, "b")
        assert (await dispatcher.take(1))["bundle_id"] == "a"  # another runner takes it
        assert await dispatcher.take_notices() == [("a", "retried", 0)]
        await dispatcher.runner_gone(1)  # interrupted again: out of retries
        assert await dispatcher.take_notices() == [("a", "lost", 1)]
        await dispatcher.put([{"bundle_id": "c"}, {"bundle_id": "d"}])
        await dispatcher.withdraw(["c"])
        assert (await dispatcher.take(2))["bundle_id"] == "d"  # a withdrawn bundle is skipped
        await dispatcher.close(runners=1)
        assert await dispatcher.take(3) is None

    asyncio.run(scenario())


def test_the_dispatcher_counts_each_bundles_runner_seconds_by_its_own_clock(monkeypatch) -> None:
    """Slot use: a bundle is busy from the take to the finish (or to its runner's death), retries included; one
    still running counts until now. A fake clock makes every figure exact."""
    import asyncio

    from nero_study.study import pool as pool_module
    from nero_study.study.pool import Dispatcher

    now = [100.0]
    monkeypatch.setattr(pool_module.time, "monotonic", lambda: now[0])

    async def scenario() -> None:
        dispatcher = Dispatcher(max_retries=1)
        await dispatcher.put([{"bundle_id": "a"}, {"bundle_id": "b"}, {"bundle_id": "c"}])
        await dispatcher.take(0)  # a, at 100
        await dispatcher.take(1)  # b, at 100
        now[0] = 103.0
        await dispatcher.finish(0, "a")  # a: 3 s
        now[0] = 104.0
        await dispatcher.runner_gone(1)  # b's runner dies: 4 s so far, b queued again behind c
        await dispatcher.take(0)  # c, at 104
        now[0] = 105.0
        await dispatcher.take(1)  # b again, at 105
        now[0] = 107.0
        await dispatcher.finish(1, "b")  # b: 4 + 2 s
        assert await dispatcher.busy_seconds(["a", "b", "c"]) == 3.0 + 6.0 + 3.0  # c still running: until now
        assert await dispatcher.busy_seconds(["a", "b"]) == 0.0  # counted once, then forgotten
        now[0] = 108.0
        await dispatcher.finish(0, "c")
        assert await dispatcher.busy_seconds(["c"]) == 4.0

    asyncio.run(scenario())


def test_longest_bundles_go_first_by_their_tasks_measured_seconds() -> None:
    from nero_study.study.engine import longest_first
    from nero_study.study.protocol import Bundle
    from nero_study.tasks.base import TrialSpec

    def bundle(name: str, task: str, members: int) -> Bundle:
        spec = TrialSpec(task=task, optimizer="sgd", lr=0.1, seed=0, budget="smoke")
        return Bundle(bundle_id=name, trial_ids=tuple(range(members)), specs=(spec,) * members, execution="packed")

    bundles = [bundle("short", "fast", 4), bundle("long", "slow", 2), bundle("mid", "fast", 6), bundle("new", "x", 1)]
    measured = {"fast": 1.0, "slow": 10.0}  # "x": not measured, counts as their mean (5.5 s)
    assert [b.bundle_id for b in longest_first(bundles, measured)] == ["long", "mid", "new", "short"]
    assert [b.bundle_id for b in longest_first(bundles, {})] == ["mid", "short", "long", "new"]  # by size alone


def test_paper_protocol_repeats_start_per_task_on_the_runners_and_match_the_fresh_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On warm runners each task's seed repeats join the queue when that task's grid has ended (said once per
    task); what is run and found is what the per-sweep Tune experiment, phase after phase, runs and finds."""
    import logging

    factory = _factory(tmp_path)
    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp", "text-lm"],
            "optimizers": ["sgd"],
            "lrs": [0.01, 1.0],
            "seeds": [0, 1],
            "protocol": "paper",
            "budget": "smoke",
            "execution": "packed",
        }
    )
    fresh, fresh_trials = _run(factory, spec)  # before the runners hold the slots
    pool = WarmPool(pool_shape(Resources()))
    try:
        with caplog.at_level(logging.INFO, logger="nero_study.study.engine"):
            warm, warm_trials = _run(factory, spec, pool=pool)
        started = [r.getMessage() for r in caplog.records if "seed repeats of" in r.getMessage()]
        # Taken up again after a crash that left the stored repeats unfinished: each runs once, none is planned
        # again (the grids ended in the earlier attempt), and what they find is what they found.
        repeats = {t.id: key for key, t in warm_trials.items() if key[3] == 1}
        with factory() as session:
            session.execute(sa.update(Trial).where(Trial.id.in_(repeats)).values(status="running"))
            session.commit()
        caplog.clear()
        sweep_id = next(iter(warm_trials.values())).sweep_id
        resumed = SweepEngine(session_factory=factory, sweep_id=sweep_id, spec=spec, pool=pool, attempt=2)
        with caplog.at_level(logging.INFO, logger="nero_study.study.engine"):
            assert resumed.run().status == "succeeded"
        assert not [r for r in caplog.records if "seed repeats of" in r.getMessage()]
        assert resumed.progress.total == len(warm_trials)  # nothing queued twice
        with factory() as session:
            again = {t.id: t for t in repo.list_trials(session, sweep_id=sweep_id, limit=1000)[0]}
        assert {again[i].attempt for i in repeats} == {2}
        before = {key: warm_trials[key] for key in repeats.values()}
        _same_results({key: again[i] for i, key in repeats.items()}, before)
    finally:
        pool.close()
    assert fresh.status == warm.status == "succeeded"
    assert sorted(m.split("seed repeats of ")[1].split(" start")[0] for m in started) == ["digits-mlp", "text-lm"]
    _same_results(warm_trials, fresh_trials)  # the same trials, repeats included, with the same results
    assert {key[0] for key in warm_trials if key[3] == 1} == {"digits-mlp", "text-lm"}
    for outcome in (fresh, warm):  # slot use measured on both paths: busy within what the slots had
        busy, available = outcome.slot_use
        assert 0 < busy <= available
