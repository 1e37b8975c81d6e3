"""Workers' heartbeat rows (issue 19): each worker records itself in the ``workers`` table; ``/healthz`` reports
the live ones and answers 503 when fewer than required are alive; ``nero-study workers`` lists them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.main import create_app
from nero_study.cli import app as cli
from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.store.models import utc_now

runner = CliRunner()


def test_healthz_is_503_until_a_worker_is_alive_and_again_once_its_heartbeat_is_stale(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, worker_alive_seconds=30))  # health_min_workers: default 1
    factory = db.session_factory(db.make_engine(database_url))
    with TestClient(app) as client, factory() as session:
        none = client.get("/healthz")
        started = utc_now() - timedelta(minutes=5)
        repo.record_worker(session, worker_id="w1", host="box", pid=41, started_at=started, current_sweep="abc")
        live = client.get("/healthz")
        repo.record_worker(  # its last heartbeat 31 s ago: past the 30 s window
            session, worker_id="w1", host="box", pid=41, started_at=started, current_sweep="abc",
            now=utc_now() - timedelta(seconds=31),
        )
        stale = client.get("/healthz")

    assert none.status_code == 503 and none.json()["database"] == "ok"
    assert none.json()["workers"]["alive"] == 0 and none.json()["workers"]["required"] == 1
    assert live.status_code == 200
    (seen,) = live.json()["workers"]["live"]
    assert (seen["id"], seen["host"], seen["pid"], seen["current_sweep"]) == ("w1", "box", 41, "abc")
    assert stale.status_code == 503 and stale.json()["workers"]["alive"] == 0


def test_workers_command_lists_alive_and_dead_workers(database_url: str) -> None:
    factory = db.session_factory(db.make_engine(database_url))
    with factory() as session:
        started = utc_now() - timedelta(minutes=5)
        repo.record_worker(session, worker_id="old", host="a", pid=1, started_at=started, current_sweep=None,
                           now=utc_now() - timedelta(seconds=120))
        dead_only = runner.invoke(cli, ["workers", "--db", database_url])
        repo.record_worker(session, worker_id="new", host="b", pid=2, started_at=started, current_sweep="s1")

    listed = runner.invoke(cli, ["workers", "--json", "--db", database_url])
    table = runner.invoke(cli, ["workers", "--db", database_url])

    assert dead_only.exit_code == 1 and "no worker is alive" in dead_only.output
    assert listed.exit_code == 0, listed.output
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert (rows["new"]["alive"], rows["new"]["current_sweep"], rows["new"]["pid"]) == (True, "s1", 2)
    assert rows["old"]["alive"] is False and rows["old"]["seconds_since_seen"] >= 120
    assert table.exit_code == 0 and "alive" in table.stdout and "dead" in table.stdout


@pytest.mark.process  # a real worker process: `make test-processes`
def test_a_real_worker_process_is_alive_while_it_runs_and_gone_when_it_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    db.upgrade(url)
    env = {
        **os.environ,
        "NERO_STUDY_DATABASE_URL": url,
        "NERO_STUDY_HEARTBEAT_SECONDS": "0.2",
        "NERO_STUDY_WARM_POOL_IDLE_SECONDS": "0",  # no warm runners: nothing to start but the claim loop
        "RAY_AUTH_MODE": "disabled",
    }
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "nero_study.cli", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    app = create_app(Settings(database_url=url))
    try:
        with TestClient(app) as client:
            deadline = time.monotonic() + 240  # a failsafe for a loaded machine; the loop ends when its row appears
            while (health := client.get("/healthz")).status_code != 200:
                assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            (seen,) = health.json()["workers"]["live"]
            assert seen["pid"] == worker.pid and seen["current_sweep"] is None

            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=120) == 0, log.read_text()
            after = client.get("/healthz")  # its row went with it: no waiting for the window
            assert after.status_code == 503 and after.json()["workers"]["alive"] == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
