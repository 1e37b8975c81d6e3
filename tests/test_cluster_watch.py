"""A worker on a Ray cluster whose head goes away: it notices, gives its sweep back to the queue and exits (status 3),
and a worker started while the head is away waits for it. The whole path with real processes is the cluster test
``test_kill_9_the_ray_head_mid_sweep`` (tests/deploy); here the parts, in this process, on a real SQLite store and
real sockets standing in for the head's GCS port."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import pytest

from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.study.cluster import gcs_address, gcs_reachable
from nero_study.study.spec import SweepSpec
from workers.worker import EXIT_CLUSTER_LOST, SweepWorker, _ClusterWatch


@pytest.fixture
def head() -> socket.socket:
    """A listening socket on a free loopback port: the head's GCS port while it is open."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def address(server: socket.socket) -> tuple[str, int]:
    host, port = server.getsockname()
    return host, port


def ray_address(server: socket.socket) -> str:
    host, port = address(server)
    return f"{host}:{port}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("ray-head:6379", ("ray-head", 6379)),
        (" ray-head:6379 ", ("ray-head", 6379)),
        ("auto", None),
        ("", None),
        ("ray://ray-head:10001", None),  # a Ray client address: not a GCS to probe
        ("ray-head", None),
        ("ray-head:port", None),
    ],
)
def test_the_head_to_watch_comes_from_ray_address(value: str, expected) -> None:
    assert gcs_address(value) == expected


def test_a_probe_tells_an_answering_head_from_a_gone_one(head: socket.socket) -> None:
    host, port = address(head)
    assert gcs_reachable(host, port)
    head.close()
    assert not gcs_reachable(host, port)


def test_the_watch_reports_a_head_that_stopped_answering(head: socket.socket) -> None:
    host, port = address(head)
    lost = threading.Event()
    silent: list[float] = []
    watch = _ClusterWatch(host, port, interval=0.05, grace=0.2, on_lost=lambda s: (silent.append(s), lost.set()))
    watch.start()
    head.close()
    assert lost.wait(timeout=60), "the watch did not report the head gone"
    watch.join(timeout=60)
    assert not watch.is_alive()  # reports once, then ends
    assert len(silent) == 1 and silent[0] >= 0.2


def make_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ray_address: str, **settings) -> SweepWorker:
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    db.upgrade(url)
    return SweepWorker(Settings(database_url=url, seed_demo=False, **settings), owner="w:1:abc")


def test_a_lost_cluster_gives_the_held_sweep_back_and_exits_with_status_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: socket.socket
) -> None:
    worker = make_worker(tmp_path, monkeypatch, ray_address(head))
    spec = SweepSpec.model_validate({"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "budget": "smoke"})
    with worker.session_factory() as session:
        sweep_id = repo.create_sweep(session, spec=spec.model_dump(mode="json"), name="held")[0].id
    claimed = worker.claim()
    assert claimed is not None and claimed[0] == sweep_id
    codes: list[int] = []
    worker.exit = codes.append
    worker.current_sweep = sweep_id
    worker.on_cluster_lost(12.0)
    assert codes == [EXIT_CLUSTER_LOST]
    with worker.session_factory() as session:
        sweep = repo.get_sweep(session, sweep_id=sweep_id)
        assert sweep.status == "queued" and sweep.lease_owner is None  # any worker may take it up again
        assert sweep.attempts == 1


def test_a_ray_error_counts_as_the_cluster_lost_only_while_the_head_stays_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: socket.socket
) -> None:
    from ray.exceptions import RayError

    worker = make_worker(tmp_path, monkeypatch, ray_address(head), ray_lost_seconds=0.5)
    assert not worker.cluster_lost_with(RayError("actor unavailable"))  # the head answers: an ordinary failure
    head.close()
    assert not worker.cluster_lost_with(ValueError("a bug"))  # not a Ray error: an ordinary failure
    assert worker.cluster_lost_with(RayError("actor unavailable"))


def test_a_worker_waits_for_an_absent_head_and_stops_when_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: socket.socket
) -> None:
    import ray

    host, port = address(head)
    head.close()  # no head yet
    worker = make_worker(tmp_path, monkeypatch, f"{host}:{port}")
    # A worker process not yet connected to Ray (this test process may hold the test session's Ray).
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(worker.cluster_ready()))
    waiting.start()
    worker.stopping.set()
    waiting.join(timeout=60)
    assert result == [False]  # stopped while waiting: nothing claimed, no Ray started

    with socket.socket() as again:
        again.bind((host, port))
        again.listen()
        worker.stopping.clear()
        assert worker.cluster_ready()  # the head answers: the worker goes on


class _Said(logging.Handler):
    """Sets ``event`` when a log record's message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_connected_worker_claims_nothing_while_its_head_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: socket.socket
) -> None:
    """Connected to a head that has just gone, a worker waits (its watch then ends it) rather than claim the sweep
    another worker gave back: a claim there only ends in another release, one attempt later."""
    import ray

    worker = make_worker(tmp_path, monkeypatch, ray_address(head))
    worker.warm = False  # straight to the claim loop
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # connected to this head before it went
    ran: list[str] = []
    worker.process = lambda sweep_id, *args, **kwargs: ran.append(sweep_id)  # a claim would get this far
    spec = SweepSpec.model_validate({"tasks": ["digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "budget": "smoke"})
    with worker.session_factory() as session:
        sweep_id = repo.create_sweep(session, spec=spec.model_dump(mode="json"), name="given back")[0].id
    head.close()
    said = _Said("waiting for the Ray cluster")
    logging.getLogger().addHandler(said)
    try:
        running = threading.Thread(target=lambda: worker.run_forever(once=True))
        running.start()
        said.event.wait(timeout=60)  # or the worker claimed the sweep and ended (once=True)
        worker.stopping.set()
        running.join(timeout=60)
    finally:
        logging.getLogger().removeHandler(said)
    assert not running.is_alive()
    assert ran == []
    with worker.session_factory() as session:
        sweep = repo.get_sweep(session, sweep_id=sweep_id)
        assert (sweep.status, sweep.attempts, sweep.lease_owner) == ("queued", 0, None)  # never claimed


def test_a_ray_error_is_not_a_lost_cluster_on_a_local_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import RayError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    worker = SweepWorker(Settings(database_url=url, seed_demo=False))
    assert not worker.cluster_lost_with(RayError("actor unavailable"))


def test_the_lost_time_must_stay_under_rays_own_limit() -> None:
    with pytest.raises(ValueError, match="ray_lost_seconds"):
        Settings(ray_lost_seconds=60)
