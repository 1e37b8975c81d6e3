"""The sweep worker in this process: queued sweeps run on one warm pool, closed when the worker stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.study.cluster import pool_shape
from nero_study.study.queue import queue_sweep
from nero_study.study.spec import Resources, SweepSpec
from workers.worker import SweepWorker

pytestmark = pytest.mark.usefixtures("ray_session")


def test_worker_runs_queued_sweeps_on_the_same_warm_runners_and_closes_them_on_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    db.upgrade(url)
    settings = Settings(database_url=url, poll_seconds=0.1, seed_demo=False)
    worker = SweepWorker(settings, owner="test-worker")
    spec = SweepSpec.model_validate(
        {"tasks": ["digits-mlp"], "optimizers": ["nero", "sgd"], "lrs": [0.01, 0.1], "budget": "smoke"}
    )
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        ids = [repo.create_sweep(session, spec=spec.model_dump(mode="json"), name=f"s{i}")[0].id for i in range(2)]

    pools_seen = []
    process = worker.process

    def process_and_note_pool(*args, **kwargs):
        status = process(*args, **kwargs)
        pools_seen.append(worker.pool)
        return status

    worker.process = process_and_note_pool  # type: ignore[method-assign]
    ran = worker.run_forever(idle_timeout=2.0)

    assert ran == 2
    with factory() as session:
        for sweep_id in ids:
            sweep = repo.get_sweep(session, sweep_id=sweep_id)
            assert sweep.status == "succeeded" and sweep.execution == "packed"
            assert 0 < sweep.busy_slot_s <= sweep.slot_s  # its slot use, measured and stored by the worker
            counts = repo.sweep_counts(session, sweep_id=sweep_id)
            assert counts["succeeded"] + counts["diverged"] == 4  # both defaults (0.01, 0.1) are in the grid
    first, second = pools_seen
    assert first is not None and second is first  # the second sweep ran on the first one's runners
    assert worker.pool is None and not first.alive  # its Tune experiment has ended


def test_idle_runners_are_kept_on_a_local_ray_and_let_go_on_a_shared_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", warm_pool_idle_seconds=120)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = SweepWorker(settings)
    assert local.warm and local.pool_idle_seconds is None
    assert not SweepWorker(settings.model_copy(update={"warm_pool_idle_seconds": 0})).warm
    assert not SweepWorker(settings, warm_pool=False).warm
    try:
        pool = local.warm_pool(pool_shape(Resources()))
        local.close_pool_if_idle(now=pool.last_used + 3600)  # an hour idle on its own Ray: kept
        assert local.pool is pool and pool.alive
    finally:
        local.close()

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # read when the worker is made; Ray is already up here
    shared = SweepWorker(settings)
    assert shared.pool_idle_seconds == 120
    pool = shared.warm_pool(pool_shape(Resources()))
    shared.close_pool_if_idle(now=pool.last_used + 119)
    assert shared.pool is pool and pool.alive
    shared.close_pool_if_idle(now=pool.last_used + 121)
    assert shared.pool is None and not pool.alive


def test_a_tpe_sweep_lets_the_warm_runners_go_first(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tpe.db'}"
    db.upgrade(url)
    worker = SweepWorker(Settings(database_url=url, seed_demo=False), owner="tpe-worker")
    try:
        pool = worker.warm_pool(pool_shape(Resources()))
        tpe = {
            "tasks": ["digits-mlp"],
            "optimizers": ["adam"],
            "lrs": {"min": 1e-4, "max": 1e-1, "points_per_decade": 1},
            "protocol": "tpe",
            "tpe_trials": 2,
            "budget": "smoke",
        }
        factory = db.session_factory(db.make_engine(url))
        with factory() as session:
            sweep_id = repo.create_sweep(session, spec=tpe, name="tpe")[0].id
        assert worker.process(*worker.claim()) == "succeeded"
        assert worker.pool is None and not pool.alive  # closed first: idle runners would hold TPE's slots
        with factory() as session:
            assert repo.list_trials(session, sweep_id=sweep_id)[1] == 2
    finally:
        worker.close()


def test_a_sweep_queued_by_any_path_runs_on_a_worker_with_a_lower_trial_limit(tmp_path: Path) -> None:
    """The service limit is checked when a sweep is queued and is never stored: a worker does not re-apply its own."""
    url = f"sqlite:///{tmp_path / 'limit.db'}"
    db.upgrade(url)
    spec = SweepSpec.model_validate(
        {"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "seeds": [0, 1, 2], "budget": "smoke"}
    )
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        sweep, created = queue_sweep(session, spec)  # as the API, `nero-study sweep` and the demo queue
        assert created and sweep.spec["max_trials"] is None and sweep.planned_trials == 3
    worker = SweepWorker(Settings(database_url=url, max_trials_per_sweep=2, seed_demo=False), warm_pool=False)
    assert worker.process(*worker.claim()) == "succeeded"
    with factory() as session:
        assert repo.sweep_counts(session, sweep_id=sweep.id)["succeeded"] == 3
