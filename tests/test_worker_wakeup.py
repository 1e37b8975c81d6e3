"""A submitted sweep wakes ``serve``'s idle workers: the supervisor sends SIGUSR1 (ignored by a child until its
worker installs the handler), the worker's handler sets its wake-up flag, and an idle worker's wait for the next
poll ends at once. The whole path through a real ``serve`` is in tests/test_serve_supervision.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from nero_study.settings import Settings
from workers.supervisor import WorkerSupervisor
from workers.worker import SweepWorker


def _worker(tmp_path: Path) -> SweepWorker:
    url = f"sqlite:///{tmp_path / 'wake.db'}"
    settings = Settings(database_url=url, seed_demo=False, poll_seconds=3600)
    return SweepWorker(settings, owner="w:1:wake", warm_pool=False)


def _wait_in_thread(worker: SweepWorker) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(worker.wait_for_work(3600)))
    thread.start()
    return thread, result


def test_an_idle_worker_waits_until_woken_or_stopped(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    thread, woken = _wait_in_thread(worker)
    worker.wakeup.set()
    thread.join(timeout=60)  # a failsafe: without the wake-up the wait is an hour
    assert not thread.is_alive() and woken == [True]
    assert not worker.wakeup.is_set()  # taken: the next wait waits again

    thread, woken = _wait_in_thread(worker)
    worker.stopping.set()
    thread.join(timeout=60)
    assert not thread.is_alive() and woken == [False]
    assert worker.wait_for_work(0.0) is False


def test_sigusr1_sets_the_workers_wake_up_flag(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        worker.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert worker.wakeup.wait(timeout=60)
        assert not worker.stopping.is_set()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


CHILD = """
import signal, sys, time
ignored = signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
signal.signal(signal.SIGUSR1, lambda *_: (print("woken", flush=True), sys.exit(0)))
print("ready", ignored, flush=True)
time.sleep(60)  # ends the test (readline gives "") if the wake-up never comes
"""


def test_the_supervisor_starts_children_with_sigusr1_ignored_and_wakes_them(tmp_path: Path) -> None:
    def spawn(command: list[str], **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]

    supervisor = WorkerSupervisor(1, dict(os.environ), command=[sys.executable, "-c", CHILD], spawn=spawn)
    supervisor.start()
    try:
        (child,) = supervisor.children
        assert child.process is not None and child.process.stdout is not None
        # Ignored from the start (kept across exec): a wake-up before the worker's handler would not end it.
        assert child.process.stdout.readline().split() == ["ready", "True"]
        supervisor.wake()
        assert child.process.stdout.readline().strip() == "woken"
    finally:
        supervisor.stop(timeout=30)
