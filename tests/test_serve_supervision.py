"""``nero-study serve`` supervises its worker children (issue 19, defect 6): a worker that dies is replaced,
``/healthz`` reports the workers, and a ``serve`` killed by any signal (SIGKILL here) takes its workers with it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.process  # starts real service/worker processes: run by `make test-processes` (CI runs it)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition: Callable[[], Any], what: str, log: Path, limit_s: float = 240) -> Any:
    """Poll until ``condition()`` gives a true value and return it; the limit is a failsafe, not the test."""
    deadline = time.monotonic() + limit_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen; serve log:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def start_serve(tmp_path: Path, port: int, **settings: str) -> tuple[subprocess.Popen, Path]:
    """``nero-study serve`` with one worker on a SQLite file in ``tmp_path``, ``settings`` added to its
    environment; returns the process and its log."""
    env = {
        **os.environ,
        "NERO_STUDY_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "NERO_STUDY_API_TOKENS": "t",
        "RAY_AUTH_MODE": "disabled",
        **settings,
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "nero_study.cli", "serve", "--port", str(port), "--workers", "1", "--no-demo"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return serve, log


def test_serve_restarts_a_dead_worker_and_takes_its_workers_with_it_when_killed(tmp_path: Path) -> None:
    port = free_port()
    serve, log = start_serve(tmp_path, port, NERO_STUDY_WARM_POOL_IDLE_SECONDS="0")

    def health() -> dict | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        except httpx.HTTPError:
            return None
        return {"code": response.status_code, **response.json()}

    try:
        first = wait_for(lambda: (h := health()) and h["code"] == 200 and h, "the service answering", log)
        assert first["workers"]["expected"] == 1 and first["workers"]["alive"] == 1
        (worker_pid,) = first["workers"]["pids"]

        os.kill(worker_pid, signal.SIGKILL)
        replaced = wait_for(
            lambda: (h := health()) and h["workers"]["pids"] not in ([], [worker_pid]) and h,
            "the dead worker being replaced", log,
        )
        assert replaced["code"] == 200 and replaced["workers"]["restarts"] == 1
        assert not alive(worker_pid)  # reaped, not a zombie
        (new_pid,) = replaced["workers"]["pids"]
        assert "exited with -9; restarting" in log.read_text()

        serve.send_signal(signal.SIGKILL)
        serve.wait()
        wait_for(lambda: not alive(new_pid), "the worker ending with serve", log, 120)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_a_sweep_submitted_to_serve_is_claimed_without_waiting_for_the_workers_poll(tmp_path: Path) -> None:
    """The workers poll the queue once an hour here: both sweeps, the second submitted after the worker has found
    the queue empty again, can only finish within the failsafe because the submission woke the worker."""
    port = free_port()
    serve, log = start_serve(tmp_path, port, NERO_STUDY_POLL_SECONDS="3600")
    base = f"http://127.0.0.1:{port}"
    spec = {"tasks": ["digits-mlp"], "optimizers": ["sgd"], "lrs": [0.1], "budget": "smoke"}

    def finished(sweep_id: str) -> str | None:
        try:
            status = httpx.get(f"{base}/api/sweeps/{sweep_id}", timeout=5).json()["status"]
        except httpx.HTTPError:
            return None
        return status if status in ("succeeded", "failed", "trials_failed", "cancelled") else None

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # 200: its worker is alive
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, "the service answering", log)
        for name in ("first", "second"):
            created = httpx.post(
                f"{base}/api/sweeps", json={**spec, "name": name}, headers={"Authorization": "Bearer t"}, timeout=30
            )
            assert created.status_code == 201, created.text
            sweep_id = created.json()["id"]
            ended = wait_for(lambda sweep_id=sweep_id: finished(sweep_id), f"the {name} sweep finishing", log, 120)
            assert ended == "succeeded"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
