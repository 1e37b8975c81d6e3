"""The sweep worker in this process: queued sweeps run on one warm pool, closed when the worker stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.study.spec import SweepSpec
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
        ids = [repo.create_sweep(session, spec=spec.model_dump(mode="json"), name=f"s{i}").id for i in range(2)]

    pools_seen = []
    process = worker.process

    def process_and_note_pool(*args, **kwargs):
        status = process(*args, **kwargs)
        pools_seen.append(worker.pools.pool)
        return status

    worker.process = process_and_note_pool  # type: ignore[method-assign]
    ran = worker.run_forever(idle_timeout=2.0)

    assert ran == 2
    with factory() as session:
        for sweep_id in ids:
            sweep = repo.get_sweep(session, sweep_id=sweep_id)
            assert sweep.status == "succeeded" and sweep.execution == "packed"
            counts = repo.sweep_counts(session, sweep_id=sweep_id)
            assert counts["succeeded"] + counts["diverged"] == 4  # both defaults (0.01, 0.1) are in the grid
    first, second = pools_seen
    assert first is not None and second is first  # the second sweep ran on the first one's runners
    assert worker.pools.pool is None and not first.alive  # its Tune experiment has ended


def test_idle_runners_are_kept_on_a_local_ray_and_let_go_on_a_shared_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'w.db'}", warm_pool_idle_seconds=30)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert SweepWorker(settings).pools.idle_seconds is None
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert SweepWorker(settings).pools.idle_seconds == 30
    assert SweepWorker(settings.model_copy(update={"warm_pool_idle_seconds": 0})).pools is None
    assert SweepWorker(settings, warm_pool=False).pools is None
