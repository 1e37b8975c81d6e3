"""A worker never hangs on one sweep (issue 19, defect 1): a sweep the cluster can never hold fails at once,
naming the resource; a sweep whose warm runners break fails with the cause, and the worker starts new runners
and runs the next sweep."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.study.sink import SweepProgress
from workers.worker import SweepWorker

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(300)]

ONE_TRIAL: dict[str, Any] = {
    "tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "budget": "smoke", "max_concurrency": 1
}


def make_worker(tmp_path: Path) -> tuple[SweepWorker, Any]:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    db.upgrade(url)
    worker = SweepWorker(Settings(database_url=url, poll_seconds=0.1, seed_demo=False), owner="test-worker")
    return worker, db.session_factory(db.make_engine(url))


def queue(factory: Any, spec: dict[str, Any], name: str) -> str:
    with factory() as session:
        return repo.create_sweep(session, spec=spec, name=name)[0].id


def test_a_sweep_no_cluster_can_hold_fails_at_once_naming_the_resource(tmp_path: Path) -> None:
    import ray

    worker, factory = make_worker(tmp_path)
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources()["CPU"]
    sweep_id = queue(factory, {**ONE_TRIAL, "resources": {"cpu": cpus + 1, "gpu": gpus + 1}}, "too big")
    try:
        status = worker.process(*worker.claim())
        with factory() as session:
            sweep = repo.get_sweep(session, sweep_id=sweep_id)
            assert status == "failed" and sweep.status == "failed"
            assert f"resources.gpu {gpus + 1:g} per trial" in sweep.error
            assert f"resources.cpu {cpus + 1:g} per trial" in sweep.error
            assert repo.sweep_counts(session, sweep_id=sweep_id)["pending"] == 0  # nothing was planned
    finally:
        worker.close()


def test_a_broken_warm_pool_fails_its_sweep_and_the_next_sweep_runs_on_new_runners(tmp_path: Path) -> None:
    import ray

    worker, factory = make_worker(tmp_path)
    # A trial far longer than a report's way to the driver, so the dispatcher dies while it runs.
    long_trial = {**ONE_TRIAL, "task_options": {"digits-mlp": {"epochs": 1000, "max_steps": 1_000_000}}}
    first = queue(factory, {**long_trial, "name": "breaks the pool"}, "first")
    second = queue(factory, ONE_TRIAL, "second")
    broken: list[Any] = []

    def break_the_pool(progress: SweepProgress) -> None:
        if not broken and progress.counts["running"] and not progress.done:  # the dispatcher dies mid-trial
            broken.append(worker.pool)
            ray.kill(worker.pool.dispatcher)

    try:
        first_status = worker.process(*worker.claim(), on_progress=break_the_pool)
        second_status = worker.process(*worker.claim())
        with factory() as session:
            failed = repo.get_sweep(session, sweep_id=first)
            assert first_status == "failed" and failed.status == "failed"
            assert "Actor" in failed.error  # the cause: Ray's error about the dead actor
            assert second_status == "succeeded"
            assert repo.get_sweep(session, sweep_id=second).status == "succeeded"
            assert repo.sweep_counts(session, sweep_id=second)["succeeded"] + repo.sweep_counts(
                session, sweep_id=second
            )["diverged"] == 1
        assert broken and worker.pool is not broken[0] and not broken[0].alive
    finally:
        worker.close()


class FailingStatements:
    """Makes the next ``failures`` statements that ``matches`` fail as SQLite's disk I/O error does."""

    def __init__(self, matches: Callable[[str, Any], bool], failures: int) -> None:
        self.matches = matches
        self.remaining = failures

    def __call__(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        import sqlite3

        import sqlalchemy as sa

        if self.remaining > 0 and self.matches(statement, parameters):
            self.remaining -= 1
            raise sa.exc.OperationalError(statement, parameters, sqlite3.OperationalError("disk I/O error"))


def test_a_worker_whose_store_fails_past_the_retries_waits_instead_of_exiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import ray
    import sqlalchemy as sa

    from nero_study.store.repo import WRITE_ATTEMPTS

    worker, factory = make_worker(tmp_path)
    worker.warm = False
    too_big = {**ONE_TRIAL, "resources": {"cpu": ray.cluster_resources()["CPU"] + 1}}  # fails fast, no trials
    first = queue(factory, too_big, "claimed after the store comes back")
    # The claim fails past its retries once; then ending the sweep fails past its retries, and so does the
    # release that follows: the worker must go on (the worker exited from run_forever).
    claim_fails = FailingStatements(lambda sql, _: sql.startswith("SELECT sweeps.id"), WRITE_ATTEMPTS)
    end_fails = FailingStatements(
        lambda sql, params: sql.startswith("UPDATE sweeps")
        and ("finished_at" in sql or list(params)[:1] == ["queued"]),  # finish_sweep, release_sweep
        2 * WRITE_ATTEMPTS,
    )
    sa.event.listen(worker.engine, "before_cursor_execute", claim_fails)
    sa.event.listen(worker.engine, "before_cursor_execute", end_fails)
    caplog.set_level("INFO", logger="nero_study.worker")

    assert worker.run_forever(once=True) == 1

    assert claim_fails.remaining == 0 and end_fails.remaining == 0
    messages = [record.getMessage() for record in caplog.records]
    assert any("the store is unreachable" in m for m in messages)
    assert any(f"the store failed ending sweep {first}" in m for m in messages)
    assert any(f"could not release sweep {first} either" in m for m in messages)
    with factory() as session:
        assert repo.get_sweep(session, sweep_id=first).status == "running"  # its lease will expire
    # With the store back, the next run of the loop ends the sweep it takes over once the lease lapses.


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_sweep_that_makes_no_progress_is_failed_and_its_hung_runner_killed(tmp_path: Path) -> None:
    """A trial that hangs (its runner process stopped with SIGSTOP while it trains: no event will ever come) no
    longer holds the worker: after the stall time the sweep fails with "no progress for N s", its lease is
    released, its runners are killed, and the next sweep runs on new ones."""
    import os
    import signal

    from nero_study.study.spec import SweepSpec

    url = f"sqlite:///{tmp_path / 'worker.db'}"
    db.upgrade(url)
    settings = Settings(database_url=url, poll_seconds=0.1, heartbeat_seconds=0.2, stall_seconds=5, seed_demo=False)
    worker = SweepWorker(settings, owner="test-worker")
    factory = db.session_factory(db.make_engine(url))
    long_trial = {**ONE_TRIAL, "task_options": {"digits-mlp": {"epochs": 1000, "max_steps": 1_000_000}}}
    hung = queue(factory, long_trial, "hangs")
    after = queue(factory, ONE_TRIAL, "after")
    pool = worker.pool_for(SweepSpec.from_stored(long_trial))  # warm before the claim: the stall clock starts then
    assert pool is not None and pool.wait_until_warm(timeout=240)
    frozen: list[int] = []

    def freeze_the_runner(progress: SweepProgress) -> None:
        if not frozen and progress.counts["running"]:  # the trial has started: stop its process mid-training
            (pid,) = pool.runner_pids()
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)

    try:
        hung_status = worker.process(*worker.claim(), on_progress=freeze_the_runner)
        fresh = worker.pool_for(SweepSpec.from_stored(ONE_TRIAL))
        assert fresh is not None and fresh is not pool and fresh.wait_until_warm(timeout=240)
        after_status = worker.process(*worker.claim())
        with factory() as session:
            failed = repo.get_sweep(session, sweep_id=hung)
            assert frozen and hung_status == "failed" and failed.status == "failed"
            assert failed.error.startswith("no progress for 5 s: no trial event or result was written")
            assert failed.lease_owner == "test-worker" and failed.lease_expires_at is None  # released
            assert repo.sweep_counts(session, sweep_id=hung)["cancelled"] == 1  # the hung trial
            assert after_status == "succeeded" and repo.get_sweep(session, sweep_id=after).status == "succeeded"
        assert not pool.alive and not alive(frozen[0])  # the stopped runner was killed
    finally:
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.close()
