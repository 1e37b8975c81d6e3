"""The sweep worker: claim loop, lease heartbeats, cancellation, Ray Tune execution in the main thread.

One worker runs one sweep at a time. The ``sweeps`` table is the queue: ``claim_next_sweep`` takes a
queued sweep (or one whose lease expired: its worker died) atomically; a heartbeat thread renews the
lease and watches for a cancel request; the sweep runs through :class:`SweepEngine` in the main thread
(Tune needs it). A taken-over sweep keeps its finished trials and re-runs only the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType

from sqlalchemy.orm import Session, sessionmaker

from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.study.cluster import PoolShape, ensure_ray, pool_shape
from nero_study.study.engine import SweepEngine
from nero_study.study.pool import WarmPool
from nero_study.study.sink import ProgressHook, SweepProgress
from nero_study.study.spec import Resources, SweepSpec

logger = logging.getLogger("nero_study.worker")


class _Heartbeat(threading.Thread):
    """Renews the lease every ``interval`` seconds and records a cancel request or a lost lease."""

    def __init__(
        self, *, session_factory: sessionmaker[Session], sweep_id: str, owner: str, lease_seconds: float,
        interval: float,
    ) -> None:
        super().__init__(name=f"heartbeat-{sweep_id}", daemon=True)
        self.session_factory = session_factory
        self.sweep_id = sweep_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.stop_event = threading.Event()
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        try:
            with self.session_factory() as session:
                if not repo.renew_lease(
                    session, sweep_id=self.sweep_id, owner=self.owner, lease_seconds=self.lease_seconds
                ):
                    self.lease_lost.set()
                if repo.is_cancel_requested(session, sweep_id=self.sweep_id):
                    self.cancel_requested.set()
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker; the lease may lapse
            logger.exception("heartbeat for sweep %s failed", self.sweep_id)

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.lease_lost.is_set()


class SweepWorker:
    """Claims and runs sweeps until stopped (SIGTERM/SIGINT) or, with ``once``, after one sweep."""

    def __init__(self, settings: Settings | None = None, *, owner: str | None = None, warm_pool: bool = True) -> None:
        self.settings = settings or Settings()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.engine = db.make_engine(self.settings.database_url)
        self.session_factory = db.session_factory(self.engine)
        self.stopping = threading.Event()
        # Trial processes kept warm between sweeps (nero_study.study.pool): a later sweep starts without Ray
        # Tune's start-up. Idle runners hold their slots: on a shared cluster they go after the idle time; on
        # the local Ray this worker starts for itself no one else wants those slots, so they stay warm.
        idle = self.settings.warm_pool_idle_seconds
        self.warm = warm_pool and idle > 0
        self.pool_idle_seconds: float | None = idle if os.environ.get("RAY_ADDRESS") else None
        self.pool: WarmPool | None = None

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            logger.info("worker %s: signal %s, stopping after the current step", self.owner, signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def claim(self) -> tuple[str, dict, int] | None:
        with self.session_factory() as session:
            sweep = repo.claim_next_sweep(session, owner=self.owner, lease_seconds=self.settings.lease_seconds)
            return (sweep.id, dict(sweep.spec), sweep.attempts) if sweep is not None else None

    def run_forever(self, *, once: bool = False, idle_timeout: float | None = None) -> int:
        """Process sweeps; returns how many were run. ``idle_timeout`` stops after that long with no work."""
        processed = 0
        idle_since = time.monotonic()
        if self.warm:
            # Start the runners for the default per-trial resources now, while the queue may still be
            # empty: the first sweep then finds them warm too (a sweep needing others replaces them).
            ensure_ray()
            self.warm_pool(pool_shape(Resources()))
        try:
            while not self.stopping.is_set():
                claimed = self.claim()
                if claimed is None:
                    if once or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
                        break
                    self.close_pool_if_idle()
                    self.stopping.wait(self.settings.poll_seconds)
                    continue
                self.process(*claimed)
                processed += 1
                idle_since = time.monotonic()
                if once:
                    break
        finally:
            self.close()
        return processed

    def close(self) -> None:
        """Let the warm trial processes go (their slots return to the Ray cluster)."""
        self.close_pool()

    # -- the warm runners -------------------------------------------------------------------------------
    def warm_pool(self, shape: PoolShape) -> WarmPool:
        """The runners for ``shape``: the current ones, or new ones replacing runners of another shape."""
        if self.pool is not None and (self.pool.shape != shape or not self.pool.alive):
            self.close_pool()
        if self.pool is None:
            self.pool = WarmPool(shape)
        return self.pool

    def pool_for(self, spec: SweepSpec) -> WarmPool | None:
        """Where ``spec``'s bundles run: the warm runners, or ``None`` for a per-sweep Tune experiment (warm
        runners off, or TPE, whose experiment would find the idle runners holding its slots: they go first)."""
        if not self.warm or spec.protocol == "tpe":
            self.close_pool()
            return None
        return self.warm_pool(pool_shape(spec.resources, spec.max_concurrency))

    def close_pool_if_idle(self, now: float | None = None) -> None:
        """Let the runners go after ``pool_idle_seconds`` without a sweep (``None``: keep them).

        ``now``: the ``time.monotonic()`` reading to judge by (default: the current one).
        """
        if self.pool_idle_seconds is None or self.pool is None:
            return
        now = time.monotonic() if now is None else now
        if now - self.pool.last_used > self.pool_idle_seconds:
            logger.info("closing the warm runners after %.0f s idle", self.pool_idle_seconds)
            self.close_pool()

    def close_pool(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()

    def process(
        self, sweep_id: str, spec_data: dict, attempt: int = 1, *, on_progress: ProgressHook | None = None
    ) -> str:
        """Run one claimed sweep to its end; returns the sweep's final status."""
        logger.info("worker %s: running sweep %s", self.owner, sweep_id)
        heartbeat = _Heartbeat(
            session_factory=self.session_factory,
            sweep_id=sweep_id,
            owner=self.owner,
            lease_seconds=self.settings.lease_seconds,
            interval=self.settings.heartbeat_seconds,
        )
        heartbeat.start()
        status, error, execution = "failed", None, None
        try:
            spec = SweepSpec.from_stored(spec_data)
            ensure_ray()
            engine = SweepEngine(
                session_factory=self.session_factory,
                sweep_id=sweep_id,
                spec=spec,
                should_cancel=lambda: heartbeat.should_stop() or self.stopping.is_set(),
                on_progress=on_progress or self._log_progress,
                attempt=attempt,
                pool=self.pool_for(spec),
            )
            outcome = engine.run()
            execution = outcome.execution
            status = outcome.status
        except Exception as exc:  # noqa: BLE001 - recorded on the sweep; the worker goes on
            logger.exception("sweep %s failed", sweep_id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            heartbeat.stop_event.set()
            heartbeat.join(timeout=5)
        if heartbeat.lease_lost.is_set():
            logger.warning("worker %s lost the lease of sweep %s; leaving it to its new owner", self.owner, sweep_id)
            return "lost"
        if status == "stopped" and not heartbeat.cancel_requested.is_set():
            # Shutting down, not cancelled by a user: give the sweep back to the queue for another worker.
            with self.session_factory() as session:
                repo.release_sweep(session, sweep_id=sweep_id, owner=self.owner)
            return "released"
        if status == "stopped":
            status = "cancelled"
            with self.session_factory() as session:
                repo.cancel_pending_trials(session, sweep_id=sweep_id)
        with self.session_factory() as session:
            repo.finish_sweep(
                session, sweep_id=sweep_id, owner=self.owner, status=status, error=error, execution=execution
            )
        logger.info("worker %s: sweep %s %s", self.owner, sweep_id, status)
        return status

    def _log_progress(self, progress: SweepProgress) -> None:
        logger.debug("progress %s/%s %s", progress.done, progress.total, dict(progress.counts))
