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

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from nero_study.errors import InfeasibleResourcesError
from nero_study.settings import Settings
from nero_study.store import db, repo
from nero_study.store.models import utc_now
from nero_study.study.cluster import (
    PoolShape,
    ensure_ray,
    gcs_address,
    gcs_reachable,
    infeasible_resources,
    pool_shape,
)
from nero_study.study.engine import SweepEngine
from nero_study.study.pool import WarmPool
from nero_study.study.sink import ProgressHook, SweepProgress
from nero_study.study.spec import Resources, SweepSpec

logger = logging.getLogger("nero_study.worker")

#: The exit status of a worker whose Ray cluster went away. Its supervisor (compose's ``restart:``, ``serve``)
#: starts it again; the new process waits for the cluster before it claims anything.
EXIT_CLUSTER_LOST = 3


class _ClusterWatch(threading.Thread):
    """Probes the Ray head (a TCP connection to its GCS) every ``interval`` seconds; once it has had no answer for
    ``grace`` seconds it calls ``on_lost(silent_seconds)``, once, and ends.

    Ray ends a driver whose head stays unreachable for 60 s, from inside whatever Ray call it is in, without a word
    to the store: the sweep would stay ``running`` until its lease expired and no one would say why. The watch
    sees the head go first (``grace`` < 60 s) so that the worker gives its sweep back and says so.
    """

    def __init__(self, host: str, port: int, *, interval: float, grace: float, on_lost) -> None:
        super().__init__(name="ray-cluster-watch", daemon=True)
        self.host, self.port = host, port
        self.interval, self.grace = interval, grace
        self.on_lost = on_lost
        self.stop_event = threading.Event()

    def run(self) -> None:
        silent_since: float | None = None
        while not self.stop_event.wait(self.interval):
            if gcs_reachable(self.host, self.port, timeout=max(self.interval, 0.5)):
                silent_since = None
                continue
            now = time.monotonic()
            if silent_since is None:
                silent_since = now
                logger.warning("the Ray head at %s:%s does not answer", self.host, self.port)
            if now - silent_since >= self.grace:
                self.on_lost(now - silent_since)
                return


class _Heartbeat(threading.Thread):
    """Renews the lease every ``interval`` seconds and records a cancel request or a lost lease; a watchdog too.

    The lease is kept alive only while the sweep makes progress: when no trial event or result has been written
    for ``stall_seconds`` (:meth:`progressed` is called on each write), the heartbeat itself fails the sweep with
    "no progress for N s" and releases its lease at once, whatever the sweep's thread is stuck in, and stops
    renewing; the worker then gives up the sweep without waiting for its trials in flight and kills its runners.
    """

    def __init__(
        self, *, session_factory: sessionmaker[Session], sweep_id: str, owner: str, lease_seconds: float,
        interval: float, stall_seconds: float = 0.0,
    ) -> None:
        super().__init__(name=f"heartbeat-{sweep_id}", daemon=True)
        self.session_factory = session_factory
        self.sweep_id = sweep_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.stall_seconds = stall_seconds
        self.last_progress = time.monotonic()
        self.stop_event = threading.Event()
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.stalled = threading.Event()

    @property
    def stall_error(self) -> str:
        return (
            f"no progress for {self.stall_seconds:g} s: no trial event or result was written "
            "(a trial may hang); the sweep was stopped (NERO_STUDY_STALL_SECONDS sets the limit)"
        )

    def progressed(self) -> None:
        """A trial event or result was written for the sweep."""
        self.last_progress = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            if self.stall_seconds and time.monotonic() - self.last_progress > self.stall_seconds:
                self.fail_stalled()
                return
            self.beat()

    def fail_stalled(self) -> None:
        logger.error("worker %s: sweep %s %s", self.owner, self.sweep_id, self.stall_error)
        self.stalled.set()
        try:
            with self.session_factory() as session:
                repo.finish_sweep(
                    session, sweep_id=self.sweep_id, owner=self.owner, status="failed", error=self.stall_error
                )
        except Exception:  # noqa: BLE001 - not renewed any more, the lease expires; the worker ends it later
            logger.exception("could not record the stall of sweep %s", self.sweep_id)

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
        return self.cancel_requested.is_set() or self.lease_lost.is_set() or self.stalled.is_set()


class _Presence(threading.Thread):
    """Writes this worker's row in the ``workers`` table every ``interval`` seconds (host, pid, start, the sweep it
    runs), so that ``/healthz`` and ``nero-study workers`` see it alive; deletes the row when stopped."""

    def __init__(self, worker: SweepWorker, interval: float) -> None:
        super().__init__(name=f"presence-{worker.owner}", daemon=True)
        self.worker = worker
        self.interval = interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = utc_now()
        self.stop_event = threading.Event()

    def record(self) -> None:
        try:
            with self.worker.session_factory() as session:
                repo.record_worker(
                    session, worker_id=self.worker.owner, host=self.host, pid=self.pid, started_at=self.started_at,
                    current_sweep=self.worker.current_sweep,
                )
        except Exception:  # noqa: BLE001 - a store hiccup: the row ages and /healthz says so; the next beat retries
            logger.exception("worker %s: could not record its heartbeat", self.worker.owner)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.record()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
        try:
            with self.worker.session_factory() as session:
                repo.remove_worker(session, worker_id=self.worker.owner)
        except Exception:  # noqa: BLE001 - its row ages out of the liveness window instead
            logger.exception("worker %s: could not remove its heartbeat row", self.worker.owner)


class SweepWorker:
    """Claims and runs sweeps until stopped (SIGTERM/SIGINT) or, with ``once``, after one sweep."""

    def __init__(self, settings: Settings | None = None, *, owner: str | None = None, warm_pool: bool = True) -> None:
        self.settings = settings or Settings()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.engine = db.make_engine(self.settings.database_url)
        self.session_factory = db.session_factory(self.engine)
        self.stopping = threading.Event()
        #: Set by SIGUSR1 (``serve`` sends it when a sweep is submitted): an idle worker claims at once.
        self.wakeup = threading.Event()
        # Trial processes kept warm between sweeps (nero_study.study.pool): a later sweep starts without Ray
        # Tune's start-up. Idle runners hold their slots: on a shared cluster they go after the idle time; on
        # the local Ray this worker starts for itself no one else wants those slots, so they stay warm.
        idle = self.settings.warm_pool_idle_seconds
        self.warm = warm_pool and idle > 0
        self.pool_idle_seconds: float | None = idle if os.environ.get("RAY_ADDRESS") else None
        self.pool: WarmPool | None = None
        self.current_sweep: str | None = None  # the sweep this worker holds (cluster watch, its heartbeat row)
        self.cluster_watch: _ClusterWatch | None = None
        self.exit = os._exit  # how the cluster watch ends the process (a test passes its own)
        self._cluster_lost = threading.Lock()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT both stop the worker gracefully: its sweep goes back to the queue.

        ``ray.init`` installs its own SIGTERM handler (which exits at once, leaving the sweep ``running`` until
        its lease expires), so the handlers are installed again each time this worker connects to Ray.
        """

        def handle(signum: int, frame: FrameType | None) -> None:
            logger.info(
                "worker %s: signal %s, stopping after the current step", self.owner, signal.Signals(signum).name
            )
            self.stopping.set()

        self._signal_handler = handle
        # A per-sweep Tune experiment runs in the main thread, where Tune would take SIGINT for itself: it
        # ended the experiment and the sweep was recorded as finished with trials still pending.
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGUSR1, lambda signum, frame: self.wakeup.set())

    #: How often an idle worker looks at its stop and wake-up flags (in memory; the store is polled every
    #: ``poll_seconds``).
    WAKE_CHECK_S = 0.05

    def wait_for_work(self, seconds: float) -> bool:
        """Wait until the next poll of the queue: ``seconds``, or less when woken (SIGUSR1, :attr:`wakeup`) or
        stopped. Returns whether it was woken."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            if self.wakeup.is_set():
                self.wakeup.clear()
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.stopping.wait(min(self.WAKE_CHECK_S, remaining))
        return False

    def connect_ray(self) -> bool:
        """Connect to Ray (once per process), then take SIGTERM/SIGINT back from Ray if this worker owns them.

        On a Ray cluster (``RAY_ADDRESS=host:port``) the worker first waits for the head to answer, and then
        watches it (:class:`_ClusterWatch`). Returns ``False`` when the worker was stopped while waiting.
        """
        if not self.cluster_ready():
            return False
        ensure_ray()
        gcs = gcs_address()
        handler = getattr(self, "_signal_handler", None)
        if handler is not None and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not handler:
                    signal.signal(signum, handler)
        if gcs is not None and self.cluster_watch is None:
            self.cluster_watch = _ClusterWatch(
                *gcs, interval=1.0, grace=self.settings.ray_lost_seconds, on_lost=self.on_cluster_lost
            )
            self.cluster_watch.start()
        return True

    def cluster_ready(self) -> bool:
        """Whether Ray can be used: a local Ray, or a cluster whose head answers now (waited for).

        Probed before every claim, connected or not: a worker connected to a head that has just gone must not
        claim the sweep another worker gave back on seeing the head go (it would only give it back again when
        its own watch fires, one attempt later). While it waits here, its watch ends the process."""
        gcs = gcs_address()
        return gcs is None or self.wait_for_cluster(*gcs)

    def wait_for_cluster(self, host: str, port: int) -> bool:
        """Wait (backing off to 10 s between probes) until the Ray head answers; ``False`` if stopped first."""
        delay, said = 0.5, False
        while not self.stopping.is_set():
            if gcs_reachable(host, port):
                if said:
                    logger.info("worker %s: the Ray cluster at %s:%s answers", self.owner, host, port)
                return True
            if not said:
                logger.warning("worker %s: waiting for the Ray cluster at %s:%s", self.owner, host, port)
                said = True
            self.stopping.wait(delay)
            delay = min(delay * 2, 10.0)
        return False

    def cluster_lost_with(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a Ray error from a cluster whose head then stays silent for ``ray_lost_seconds``
        (a sweep is not failed for the cluster going away). ``False`` at once when the head answers."""
        from ray.exceptions import RayError

        gcs = gcs_address()
        if gcs is None or not isinstance(exc, RayError):
            return False
        deadline = time.monotonic() + self.settings.ray_lost_seconds
        while not gcs_reachable(*gcs):
            if time.monotonic() >= deadline:
                return True
            time.sleep(1.0)  # a probe a second until the deadline, stopping or not
        return False

    def on_cluster_lost(self, silent_seconds: float) -> None:
        """The Ray head is gone: give the sweep back to the queue (its finished trials stay), say so, and end the
        process with :data:`EXIT_CLUSTER_LOST` (this driver's Ray would end it within a minute anyway, from inside
        a call that never returns). Restarted, the worker waits for the cluster before it claims again."""
        # Once per process: the watch thread and the sweep's thread may both see the head go; the second waits
        # here for the first to end the process (it must not go on to record the sweep as failed).
        self._cluster_lost.acquire()
        gcs = gcs_address()
        where = f"{gcs[0]}:{gcs[1]}" if gcs else "RAY_ADDRESS"
        logger.error(
            "worker %s: the Ray cluster at %s is gone (no answer for %.0f s)", self.owner, where, silent_seconds
        )
        sweep_id = self.current_sweep
        if sweep_id is not None:
            try:
                with self.session_factory() as session:
                    released = repo.release_sweep(session, sweep_id=sweep_id, owner=self.owner)
                if released:
                    logger.error("worker %s: sweep %s released back to the queue", self.owner, sweep_id)
                else:
                    logger.error("worker %s: sweep %s was no longer held by this worker", self.owner, sweep_id)
            except Exception:  # noqa: BLE001 - the lease then expires and another worker takes the sweep over
                logger.exception("worker %s: could not release sweep %s; its lease will expire", self.owner, sweep_id)
        logger.error("worker %s: exiting with status %d (to be restarted)", self.owner, EXIT_CLUSTER_LOST)
        for handler in logging.getLogger().handlers:
            handler.flush()
        self.exit(EXIT_CLUSTER_LOST)

    def claim(self) -> tuple[str, dict, int] | None:
        with self.session_factory() as session:
            sweep = repo.claim_next_sweep(session, owner=self.owner, lease_seconds=self.settings.lease_seconds)
            return (sweep.id, dict(sweep.spec), sweep.attempts) if sweep is not None else None

    def run_forever(self, *, once: bool = False, idle_timeout: float | None = None) -> int:
        """Process sweeps; returns how many were run. ``idle_timeout`` stops after that long with no work."""
        processed = 0
        idle_since = time.monotonic()
        presence = _Presence(self, self.settings.heartbeat_seconds)
        presence.record()  # alive from now on (the warm runners below take seconds to start)
        presence.start()
        try:
            if self.warm and self.connect_ray():
                # Start the runners for the default per-trial resources now, while the queue may still be
                # empty: the first sweep then finds them warm too (a sweep needing others replaces them).
                self.warm_pool(pool_shape(Resources()))
            while not self.stopping.is_set():
                if not self.cluster_ready():  # on a Ray cluster: claim nothing while its head is away
                    break
                try:
                    claimed = self.claim()
                except sa.exc.DBAPIError as exc:
                    if not repo.is_transient(exc):
                        raise
                    # The store's own retries ran out: wait and try again rather than exit (we hold nothing).
                    logger.warning("worker %s: the store is unreachable (%s); waiting", self.owner, exc.orig)
                    self.stopping.wait(max(self.settings.poll_seconds, 1.0))
                    continue
                if claimed is None:
                    if once or (idle_timeout is not None and time.monotonic() - idle_since > idle_timeout):
                        break
                    self.close_pool_if_idle()
                    self.wait_for_work(self.settings.poll_seconds)
                    continue
                self.process(*claimed)
                processed += 1
                idle_since = time.monotonic()
                if once:
                    break
        finally:
            presence.stop()
            self.close()
        return processed

    def close(self) -> None:
        """Let the warm trial processes go (their slots return to the Ray cluster); stop watching the cluster."""
        if self.cluster_watch is not None:
            self.cluster_watch.stop_event.set()
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

    def discard_pool(self) -> None:
        """Close the runners after a failure; a close that fails too is logged, the pool is dropped anyway."""
        try:
            self.close_pool()
        except Exception:  # noqa: BLE001 - a broken pool may fail to close; it is dropped either way
            logger.exception("worker %s: closing the failed warm runners failed", self.owner)

    def process(
        self, sweep_id: str, spec_data: dict, attempt: int = 1, *, on_progress: ProgressHook | None = None
    ) -> str:
        """Run one claimed sweep to its end; returns the sweep's final status."""
        logger.info("worker %s: running sweep %s", self.owner, sweep_id)
        self.current_sweep = sweep_id
        heartbeat = _Heartbeat(
            session_factory=self.session_factory,
            sweep_id=sweep_id,
            owner=self.owner,
            lease_seconds=self.settings.lease_seconds,
            interval=self.settings.heartbeat_seconds,
            stall_seconds=self.settings.stall_seconds,
        )
        report = on_progress or self._log_progress

        def progressed(progress: SweepProgress) -> None:
            heartbeat.progressed()
            report(progress)

        heartbeat.start()
        status, error, execution = "failed", None, None
        slot_use: tuple[float, float] | None = None
        store_down = False
        pool: WarmPool | None = None
        try:
            spec = SweepSpec.from_stored(spec_data)
            self.connect_ray()
            problem = infeasible_resources(spec.resources)
            if problem is not None:
                raise InfeasibleResourcesError(problem)
            pool = self.pool_for(spec)
            engine = SweepEngine(
                session_factory=self.session_factory,
                sweep_id=sweep_id,
                spec=spec,
                should_cancel=lambda: heartbeat.should_stop() or self.stopping.is_set(),
                on_progress=progressed,
                attempt=attempt,
                pool=pool,
                give_up=heartbeat.stalled.is_set,
            )
            outcome = engine.run()
            execution, slot_use = outcome.execution, outcome.slot_use
            status = outcome.status
            if heartbeat.stalled.is_set():
                status, error = "failed", heartbeat.stall_error
        except Exception as exc:  # noqa: BLE001 - recorded on the sweep; the worker goes on
            if self.cluster_lost_with(exc):
                self.on_cluster_lost(self.settings.ray_lost_seconds)  # gives the sweep back; does not return
            logger.exception("sweep %s failed", sweep_id)
            error = f"{type(exc).__name__}: {exc}"
            # The store failing past its retries is not the sweep's fault: give it back rather than fail it.
            store_down = isinstance(exc, sa.exc.DBAPIError) and repo.is_transient(exc)
            if pool is not None and not heartbeat.stalled.is_set():  # stalled: its runners are killed below
                # The runners may be what failed (a dead dispatcher, a crashed experiment): never hand them
                # to the next sweep. The next sweep that needs runners starts new ones.
                logger.warning("worker %s: discarding the warm runners after sweep %s failed", self.owner, sweep_id)
                self.discard_pool()
        finally:
            heartbeat.stop_event.set()
            heartbeat.join(timeout=5)
            self.current_sweep = None
            if heartbeat.stalled.is_set() and self.pool is not None:
                # Its runners may be stuck in the trial that stalled: kill them; the next sweep gets new ones.
                logger.warning("worker %s: killing the warm runners of stalled sweep %s", self.owner, sweep_id)
                pool_to_kill, self.pool = self.pool, None
                try:
                    pool_to_kill.kill()
                except Exception:  # noqa: BLE001 - dropped either way
                    logger.exception("worker %s: killing the stalled runners failed", self.owner)
        if heartbeat.lease_lost.is_set():
            logger.warning("worker %s lost the lease of sweep %s; leaving it to its new owner", self.owner, sweep_id)
            return "lost"
        try:
            if store_down or (status == "stopped" and not heartbeat.cancel_requested.is_set()):
                # Shutting down (not cancelled by a user), or the store failed: back to the queue.
                with self.session_factory() as session:
                    repo.release_sweep(session, sweep_id=sweep_id, owner=self.owner, slot_use=slot_use)
                logger.info("worker %s: sweep %s released back to the queue", self.owner, sweep_id)
                return "released"
            if status == "stopped":
                status = "cancelled"
                with self.session_factory() as session:
                    repo.cancel_pending_trials(session, sweep_id=sweep_id)
            with self.session_factory() as session:
                repo.finish_sweep(
                    session,
                    sweep_id=sweep_id,
                    owner=self.owner,
                    status=status,
                    error=error,
                    execution=execution,
                    slot_use=slot_use,
                )
                stored = repo.get_sweep(session, sweep_id=sweep_id)
                status = stored.status if stored is not None else status  # trials_failed when some trials failed
        except sa.exc.DBAPIError as exc:
            if not repo.is_transient(exc):
                raise
            return self._release_after_store_failure(sweep_id, exc)
        logger.info("worker %s: sweep %s %s", self.owner, sweep_id, status)
        return status

    def _release_after_store_failure(self, sweep_id: str, exc: sa.exc.DBAPIError) -> str:
        """The store failed past its retries while ending a sweep: try to give the sweep back; failing that,
        its lease (no longer renewed) expires and another worker, or this one once the store answers, takes it
        over and keeps its finished trials. Either way the worker goes on."""
        logger.error("worker %s: the store failed ending sweep %s (%s)", self.owner, sweep_id, exc.orig)
        try:
            with self.session_factory() as session:
                repo.release_sweep(session, sweep_id=sweep_id, owner=self.owner)
        except sa.exc.DBAPIError as again:
            if not repo.is_transient(again):
                raise
            logger.error("worker %s: could not release sweep %s either; its lease will expire", self.owner, sweep_id)
            return "unrecorded"
        logger.info("worker %s: sweep %s released back to the queue", self.owner, sweep_id)
        return "released"

    def _log_progress(self, progress: SweepProgress) -> None:
        logger.debug("progress %s/%s %s", progress.done, progress.total, dict(progress.counts))
