"""The real service: `nero-study serve` (uvicorn) and `nero-study worker` processes on a free loopback port.

End to end over HTTP, and the faults a user must be able to survive: an API restart with queued sweeps,
a worker killed with SIGKILL mid-sweep, and two workers on PostgreSQL sharing a queue.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from nero_study.client import NeroStudyClient
from nero_study.store import db, repo
from nero_study.vocabulary import SWEEP_FINISHED

pytestmark = pytest.mark.process  # starts real service/worker processes: run by `make test-processes` (CI runs it)

TOKEN = "service-test-token"
POSTGRES_URL = os.environ.get("NERO_STUDY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """Processes of one deployment sharing a database: an API and any number of workers."""

    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "NERO_STUDY_DATABASE_URL": database_url,
            "NERO_STUDY_API_TOKENS": TOKEN,
            "NERO_STUDY_LEASE_SECONDS": "4",
            "NERO_STUDY_HEARTBEAT_SECONDS": "1",
            "NERO_STUDY_POLL_SECONDS": "0.5",
            "RAY_AUTH_MODE": "disabled",
            "NERO_STUDY_HEALTH_MIN_WORKERS": "0",  # the API comes up before its workers, as under compose
        }
        self.logs = tmp_path
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log", "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "nero_study.cli", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def start_api(self) -> None:
        self.api = self._spawn("api", "serve", "--port", str(self.port), "--workers", "0", "--no-demo")
        deadline = time.monotonic() + 300  # a failsafe for a loaded machine; the loop ends when /healthz answers
        while time.monotonic() < deadline and self.api.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(f"the API did not come up: {self.log_text()}")

    def stop_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGTERM)
        self.api.wait(timeout=30)

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn("worker", "worker")
        self.workers.append(worker)
        return worker

    def client(self) -> NeroStudyClient:
        return NeroStudyClient(self.url, token=TOKEN)

    def log_text(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.logs.glob("*.log")))

    def close(self) -> None:
        for process in [*self.workers, self.api]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers, self.api]:
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture
def sqlite_service(tmp_path: Path) -> Iterator[Service]:
    service = Service(f"sqlite:///{tmp_path / 'service.db'}", tmp_path)
    yield service
    service.close()


def _spec(name: str, seeds: int = 1, lrs: tuple[float, ...] = (0.01, 0.1)) -> dict:
    return {
        "name": name,
        "tasks": ["digits-mlp"],
        "optimizers": ["nero", "sgd"],
        "lrs": list(lrs),
        "seeds": list(range(seeds)),
        "budget": "smoke",
        "execution": "separate",
    }


def _wait_all(client: NeroStudyClient, ids: list[str], service: Service, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweeps = [client.get_sweep(sweep_id) for sweep_id in ids]
        if all(s["status"] in SWEEP_FINISHED for s in sweeps):
            return sweeps
        time.sleep(1)
    raise AssertionError(f"sweeps did not finish: {[client.get_sweep(i)['status'] for i in ids]}\n{service.log_text()}")


def test_submit_over_http_survive_an_api_restart_and_read_the_analysis(sqlite_service: Service) -> None:
    service = sqlite_service
    service.start_api()
    client = service.client()
    first = client.submit(_spec("restart-a"))["id"]
    second = client.submit(_spec("restart-b"))["id"]
    assert client.get_sweep(first)["status"] == "queued"

    service.stop_api()  # restart the API while the sweeps are queued: nothing may be lost
    service.start_api()
    client = service.client()
    listed = {s["id"]: s["status"] for s in client.list_sweeps()["data"]}
    assert listed == {first: "queued", second: "queued"}

    service.start_worker()
    for sweep in _wait_all(client, [first, second], service):
        assert sweep["status"] == "succeeded", service.log_text()
        assert sweep["counts"]["succeeded"] + sweep["counts"]["diverged"] == 4  # both defaults are on the grid
    analysis = client.analysis(first)
    labels = {row["label"] for row in analysis["per_optimizer"]}
    assert labels == {"nero", "sgd"}
    assert all(row["task"] == "digits-mlp" for row in analysis["per_optimizer"])


def test_a_worker_killed_mid_sweep_is_replaced_and_nothing_is_lost_or_counted_twice(sqlite_service: Service) -> None:
    service = sqlite_service
    service.start_api()
    client = service.client()
    sweep_id = client.submit(_spec("kill-9", seeds=6))["id"]  # 2 optimisers x 2 lrs x 6 seeds = 24 trials
    victim = service.start_worker()
    factory = db.session_factory(db.make_engine(service.database_url))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with factory() as session:
            counts = repo.sweep_counts(session, sweep_id=sweep_id)
        if counts["succeeded"] + counts["diverged"] >= 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no trial finished: {service.log_text()}")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    with factory() as session:
        counts = repo.sweep_counts(session, sweep_id=sweep_id)
    assert counts["succeeded"] + counts["diverged"] < 24, "the sweep ended before the kill: nothing was tested"

    service.start_worker()  # takes the sweep over once the dead worker's 4 s lease expires
    (sweep,) = _wait_all(client, [sweep_id], service)
    assert sweep["status"] == "succeeded"
    with factory() as session:
        trials, total = repo.list_trials(session, sweep_id=sweep_id, limit=100)
        stored = repo.get_sweep(session, sweep_id=sweep_id)
    assert total == 24
    assert len({(t.label, t.lr, t.seed) for t in trials}) == 24
    assert all(t.status in {"succeeded", "diverged"} for t in trials)
    assert stored.attempts == 2  # claimed by the dead worker, then taken over once


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the test database (a failure under CI when PostgreSQL is missing)."""
    admin = db.make_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    schema = f"nero_service_{uuid.uuid4().hex[:10]}"
    with admin.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=True))
        admin.dispose()


@pytest.mark.postgres
def test_two_workers_on_postgresql_never_claim_a_sweep_twice(postgres_url: str, tmp_path: Path) -> None:
    service = Service(postgres_url, tmp_path)
    try:
        service.start_api()
        client = service.client()
        ids = [client.submit(_spec(f"pg-{i}", lrs=(0.01,)))["id"] for i in range(4)]
        service.start_worker()
        service.start_worker()
        sweeps = _wait_all(client, ids, service)
        assert [s["status"] for s in sweeps] == ["succeeded"] * 4, service.log_text()
        factory = db.session_factory(db.make_engine(postgres_url))
        with factory() as session:
            attempts = [repo.get_sweep(session, sweep_id=i).attempts for i in ids]
            totals = [repo.list_trials(session, sweep_id=i)[1] for i in ids]
        assert attempts == [1, 1, 1, 1]  # each sweep claimed exactly once
        assert totals == [3, 3, 3, 3]  # nero 0.01; sgd 0.01 and its default 0.1
    finally:
        service.close()
