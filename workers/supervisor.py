"""``serve``'s worker children: started, restarted with backoff when one dies, and ended with ``serve``.

Each child is a ``nero-study worker`` process. A monitor thread reaps a child that exits (no zombie) and starts
a new one after a backoff that doubles with each quick death (1 s up to 60 s; a child that ran a minute resets
it). :meth:`WorkerSupervisor.wake` signals the children when a sweep is submitted, so that an idle one claims it
at once rather than at its next poll of the queue. On Linux each child also asks the kernel for SIGTERM when
the process that started it ends, so a ``serve`` killed by any signal, SIGKILL included, takes its workers (and,
through their SIGTERM handling, their Ray) with it. ``status()`` is what ``/healthz`` reports of them, beside the
heartbeat rows every worker writes.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("nero_study.supervisor")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
#: A child that ran this long before dying restarts after the first backoff again.
STABLE_AFTER_S = 60.0
#: How often the monitor looks at its children (s).
CHECK_EVERY_S = 0.5


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None).prctl


# Resolved here, in the parent: the forked child only calls it (no library loading between fork and exec).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _prepare_child() -> None:
    """In the child, before exec: SIGTERM when the thread that started it ends (Linux ``PR_SET_PDEATHSIG``), and
    SIGUSR1 ignored (kept across exec) until the worker installs its wake-up handler: a wake-up sent while the
    child still starts would otherwise end it."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF_S
    restart_at: float | None = None
    restarts: int = 0


class WorkerSupervisor:
    """``count`` worker processes kept running until :meth:`stop`."""

    def __init__(self, count: int, env: dict[str, str], command: list[str] | None = None,
                 spawn: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.count = count
        self.env = env
        self.command = command or [sys.executable, "-m", "nero_study.cli", "worker"]
        self.spawn = spawn
        self.children = [_Child(slot) for slot in range(count)]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._monitor, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        for child in self.children:
            self._start(child)
        self.thread.start()

    def _start(self, child: _Child) -> None:
        child.process = self.spawn(self.command, env=self.env, preexec_fn=_prepare_child)
        child.started = time.monotonic()
        child.restart_at = None
        logger.info("worker %d started (pid %d)", child.slot, child.process.pid)

    def _monitor(self) -> None:
        while not self.stopping.wait(CHECK_EVERY_S):
            with self.lock:
                for child in self.children:
                    self._check(child, time.monotonic())

    def _check(self, child: _Child, now: float) -> None:
        if self.stopping.is_set():
            return
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._start(child)
            return
        if child.process is None or child.process.poll() is None:
            return
        if now - child.started >= STABLE_AFTER_S:
            child.backoff = FIRST_BACKOFF_S
        logger.warning(
            "worker %d (pid %d) exited with %s; restarting in %.0f s",
            child.slot, child.process.pid, child.process.returncode, child.backoff,
        )
        child.restart_at = now + child.backoff
        child.backoff = min(child.backoff * 2, MAX_BACKOFF_S)

    def status(self) -> dict[str, object]:
        """Child processes expected and running, their pids and restarts (``/healthz`` shows them beside the
        workers' heartbeat rows)."""
        with self.lock:
            running = [c.process.pid for c in self.children if c.process is not None and c.process.poll() is None]
            return {"expected": self.count, "running": len(running), "pids": running,
                    "restarts": sum(c.restarts for c in self.children)}

    def wake(self) -> None:
        """SIGUSR1 to every running child: an idle worker claims at once instead of at its next poll (the API
        calls this when a sweep is submitted)."""
        with self.lock:
            processes = [c.process for c in self.children if c.process is not None]
        for process in processes:
            process.send_signal(signal.SIGUSR1)  # skips, by itself, a child that has exited

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every child (each releases its sweep and stops its Ray), then SIGKILL what is left."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
        processes = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.error("worker pid %d did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.wait()


__all__ = ["WorkerSupervisor"]
