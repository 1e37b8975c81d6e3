"""SIGTERM stops a worker process as SIGINT does (issue 19, defect 4): the sweep goes back to the queue at
once, the worker logs that it is stopping, and the local Ray it started goes with it.

``docker compose stop``, systemd and ``serve`` all send SIGTERM; before the fix Ray's own SIGTERM handler
(installed by ``ray.init``) ended the worker at once and the sweep stayed ``running`` until its lease expired.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nero_study.store import db, repo

pytestmark = pytest.mark.process  # starts real service/worker processes: run by `make test-processes` (CI runs it)

LONG_SWEEP = {
    "name": "long enough to be running when the signal comes",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero", "sgd"],
    "lrs": {"min": 1e-4, "max": 1.0, "points_per_decade": 20},
    "budget": "smoke",
    "execution": "separate",
}


def descendants(pid: int) -> set[int]:
    """Process ids below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition, what: str, log: Path, limit_s: float = 240) -> None:
    """Wait until ``condition()`` holds (polling the store or /proc); the limit is a failsafe, not the test."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen; worker log:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_releases_the_sweep_logs_stopping_and_stops_ray(tmp_path: Path, signum: int) -> None:
    url = f"sqlite:///{tmp_path / 'signals.db'}"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        sweep_id = repo.create_sweep(session, spec=LONG_SWEEP, name="long")[0].id
    env = {
        **os.environ,
        "NERO_STUDY_DATABASE_URL": url,
        "NERO_STUDY_WARM_POOL_IDLE_SECONDS": "0",  # no warm runners: the sweep starts sooner
        "NERO_STUDY_SEED_DEMO": "false",
        "RAY_AUTH_MODE": "disabled",
    }
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "nero_study.cli", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:

        def a_trial_finished() -> bool:
            with factory() as session:
                counts = repo.sweep_counts(session, sweep_id=sweep_id)
            return counts["succeeded"] + counts["diverged"] + counts["failed"] > 0

        wait_for(a_trial_finished, "a finished trial", log)
        ray_processes = descendants(worker.pid)
        assert ray_processes  # the worker started its own Ray

        worker.send_signal(signum)
        try:
            returncode = worker.wait(timeout=120)  # a failsafe: the worker stops at its next stop check
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not stop:\n{log.read_text()[-4000:]}") from None
        assert returncode == 0, log.read_text()[-4000:]

        text = log.read_text()
        assert f"signal {signal.Signals(signum).name}, stopping" in text
        assert f"sweep {sweep_id} released back to the queue" in text
        with factory() as session:
            sweep = repo.get_sweep(session, sweep_id=sweep_id)
            assert sweep.status == "queued" and sweep.lease_owner is None
            assert repo.sweep_counts(session, sweep_id=sweep_id)["pending"] > 0  # stopped mid-sweep
        wait_for(lambda: not any(alive(pid) for pid in ray_processes), "Ray's processes ending", log, 60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
