"""Warm runners: Ray Tune trials that outlive one sweep, so a worker's later sweeps start at once.

A fresh ``Tuner.fit`` starts its trial actors in fresh processes: Ray worker start-up, Ray Tune, torch
and ``torch._dynamo`` imports, data loading; about 6 s per sweep on two CPUs before the first trial
trains, whatever packing saves per trial. A long-running worker instead keeps one Tune experiment
going in a background thread whose trials are *runners*, one per slot. Each runner loops: take a
bundle from a dispatcher (a small async Ray actor), run it with :func:`execute.run_bundle` and report
its events through Tune, take the next. Sweeps put bundles in; the driver-side Tune callback passes the
runners' reports to the sweep's thread, which hands their events to the sweep's own
:class:`~nero_study.study.sink.StoreSink`, so what reaches the store is exactly what the one-fit-per-sweep path
writes.

* Cancel (or a lost lease, or shutdown): queued bundles are withdrawn and in-flight ones stop at their
  next report; the runners stay warm.
* A runner process that dies (a segfault, the OOM killer) is restarted by Tune; its bundle is run again
  up to ``max_failures`` times (finished members keep their first result), then its unfinished
  members fail with the runner's error.
* The pool holds its slots' resources while idle. The worker that owns it decides when it goes
  (``workers/worker.py``): after an idle time on a shared Ray cluster, before a sweep that needs another
  :class:`~nero_study.study.cluster.PoolShape` (then replaced), before a TPE sweep (which runs its own Tune
  experiment), and when the worker stops.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback, Stopper

from nero_study.study.cluster import PoolShape, head_node_scheduling
from nero_study.study.protocol import (
    RESULT_BUNDLE,
    RESULT_BUNDLE_DONE,
    RESULT_EVENTS,
    RESULT_RUNNER_PID,
    Bundle,
    decode_events,
)
from nero_study.study.sink import StoreSink, tune_trial_error

logger = logging.getLogger(__name__)

NAMESPACE = "nero-study"


class Dispatcher:
    """The runners' work queue (an async Ray actor): wire bundles in, one at a time out to each runner."""

    def __init__(self, max_retries: int) -> None:
        import asyncio

        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.max_retries = max_retries
        self.in_flight: dict[int, dict[str, Any]] = {}  # runner -> the bundle it is running
        self.attempts: dict[str, int] = {}  # bundle id -> times run again
        self.withdrawn: set[str] = set()
        self.notices: list[tuple[str, str, int]] = []  # (bundle id, what happened, runner)
        self.runners: dict[int, Any] = {}  # runner -> its Tune trial actor (to kill a hung runner)
        self.closed = False
        # Slot use: when each runner took its bundle, and each bundle's seconds on a runner (retries included),
        # by this actor's clock (one clock, wherever the runners are).
        self.taken_at: dict[int, float] = {}
        self.busy: dict[str, float] = {}

    async def register(self, runner: int, actor: Any) -> None:
        self.runners[runner] = actor

    async def runner_actors(self) -> list[Any]:
        return list(self.runners.values())

    async def put(self, bundles: list[dict[str, Any]]) -> None:
        for bundle in bundles:
            self.attempts[bundle["bundle_id"]] = 0
            self.queue.put_nowait(bundle)

    def _busy_until_now(self, runner: int, bundle_id: str) -> None:
        taken = self.taken_at.pop(runner, None)
        if taken is not None:
            self.busy[bundle_id] = self.busy.get(bundle_id, 0.0) + time.monotonic() - taken

    def _interrupted(self, runner: int) -> None:
        """``runner`` died mid-bundle: run the bundle again (another runner may take it) or give it up."""
        interrupted = self.in_flight.pop(runner, None)
        if interrupted is None:
            return
        bundle_id = interrupted["bundle_id"]
        self._busy_until_now(runner, bundle_id)
        if bundle_id in self.withdrawn:
            self.notices.append((bundle_id, "stopped", runner))
        elif self.attempts[bundle_id] < self.max_retries:
            self.attempts[bundle_id] += 1
            self.notices.append((bundle_id, "retried", runner))
            self.queue.put_nowait(interrupted)
        else:
            self.notices.append((bundle_id, "lost", runner))

    async def take(self, runner: int) -> dict[str, Any] | None:
        self._interrupted(runner)  # still in flight: this runner died mid-bundle and Tune restarted it
        while True:
            if self.closed:
                return None
            bundle = await self.queue.get()
            if bundle is None:
                return None
            if bundle["bundle_id"] in self.withdrawn:
                continue
            self.in_flight[runner] = bundle
            self.taken_at[runner] = time.monotonic()
            return bundle

    async def runner_gone(self, runner: int) -> None:
        """Tune gave up restarting ``runner``: its bundle, if any, goes back to the queue or fails."""
        self._interrupted(runner)

    async def finish(self, runner: int, bundle_id: str) -> None:
        if self.in_flight.get(runner, {}).get("bundle_id") == bundle_id:
            del self.in_flight[runner]
            self._busy_until_now(runner, bundle_id)

    async def busy_seconds(self, bundle_ids: list[str]) -> float:
        """Runner-seconds spent on ``bundle_ids`` (those still running: until now); forgets the finished ones."""
        now = time.monotonic()
        wanted = set(bundle_ids)
        total = sum(self.busy.pop(bundle_id, 0.0) for bundle_id in wanted)
        for runner, bundle in self.in_flight.items():
            if bundle["bundle_id"] in wanted and runner in self.taken_at:
                total += now - self.taken_at[runner]
        return total

    async def is_withdrawn(self, bundle_id: str) -> bool:
        return bundle_id in self.withdrawn

    async def withdraw(self, bundle_ids: list[str]) -> None:
        """Queued bundles are dropped when reached; running ones stop at their next report."""
        self.withdrawn.update(bundle_ids)

    async def take_notices(self) -> list[tuple[str, str, int]]:
        notices, self.notices = self.notices, []
        return notices

    async def in_flight_bundles(self) -> list[str]:
        return [bundle["bundle_id"] for bundle in self.in_flight.values()]

    async def close(self, runners: int) -> None:
        self.closed = True
        for _ in range(runners):
            self.queue.put_nowait(None)


class _Outbox(Callback):
    """Driver-side Tune callback of the pool's experiment: passes runners' reports to the sweep thread."""

    def __init__(self) -> None:
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.runner_errors: dict[int, str] = {}
        self.pids: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # Tune pickles callbacks into its experiment state; this one lives only in the driver

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        if RESULT_RUNNER_PID in result:
            self.pids.add(int(result[RESULT_RUNNER_PID]))
        if RESULT_BUNDLE in result:
            self.items.put(("result", result))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        runner = int(trial.config["runner"])
        self.runner_errors[runner] = tune_trial_error(trial) or "the runner process died"
        # Its bundle goes back to the queue now, not when Tune has restarted the runner: a runner lost with its
        # node may wait for room that never frees (the surviving runners hold the slots, idle).
        self.items.put(("runner_restarting", runner))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_recover(iteration, trials, trial)
        self.items.put(("runner_gone", int(trial.config["runner"])))


class _EndExperiment(Stopper):
    """Ends the pool's whole Tune experiment once :meth:`end` is called (a close, or a pool found broken)."""

    def __init__(self) -> None:
        self.ended = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # lives only in the driver, like the outbox

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ended = threading.Event()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.ended.is_set()

    def end(self) -> None:
        self.ended.set()


class WarmPool:
    """One long-lived Tune experiment of ``shape.slots`` runner trials, fed bundles by :meth:`run`."""

    def __init__(self, shape: PoolShape, *, max_failures: int = 2, flush_seconds: float = 0.5) -> None:
        import ray

        self.shape = shape
        self.max_failures = max_failures
        self.name = f"pool-{uuid.uuid4().hex[:10]}"
        self.outbox = _Outbox()
        self.stopper = _EndExperiment()
        self.dispatcher = (
            ray.remote(num_cpus=0)(Dispatcher)
            # On the head node: a dispatcher on a worker node that is lost takes every bundle with it.
            .options(
                name=self.name, namespace=NAMESPACE, max_concurrency=1000, scheduling_strategy=head_node_scheduling()
            )
            .remote(max_failures)
        )
        self.flush_seconds = flush_seconds
        self.storage = tempfile.mkdtemp(prefix="nero-study-pool-")
        self.error: BaseException | None = None
        self.gone: set[int] = set()
        self.last_used = time.monotonic()
        self.retries = 0  # bundles run again after their runner died
        self.last_busy_s: float | None = None  # runner-seconds of the last run()'s bundles
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()

    # -- the experiment, in its own thread ------------------------------------------------------
    def _serve(self) -> None:
        from ray import tune

        from nero_study.study.trainables import runner_trainable

        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # Tune's end-of-run summary complains that runners wrote no result files (file loggers are off).
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            tune.Tuner(
                tune.with_resources(runner_trainable, self.shape.resources),
                param_space={
                    "runner": tune.grid_search(list(range(self.shape.slots))),
                    "pool": self.name,
                    "namespace": NAMESPACE,
                    "threads": self.shape.threads,
                    "flush_seconds": self.flush_seconds,
                },
                tune_config=tune.TuneConfig(max_concurrent_trials=self.shape.slots),
                run_config=tune.RunConfig(
                    name=self.name,
                    storage_path=self.storage,
                    callbacks=[self.outbox],
                    stop=self.stopper,
                    # A runner that dies is restarted; its bundle's retries are counted by the dispatcher.
                    failure_config=tune.FailureConfig(max_failures=20),
                    verbose=0,
                    log_to_file=False,
                ),
            ).fit()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the sweep that is waiting on the pool
            logger.exception("warm pool %s stopped", self.name)
            self.error = exc
        finally:
            self.outbox.items.put(("closed", None))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None and len(self.gone) < self.shape.slots

    # -- a sweep's bundles, run from the sweep's thread -----------------------------------------
    def run(
        self,
        bundles: Sequence[Bundle],
        sink: StoreSink,
        should_stop: Callable[[], bool],
        give_up: Callable[[], bool] | None = None,
        refill: Callable[[], Sequence[Bundle]] | None = None,
    ) -> bool:
        """Run ``bundles`` on the runners, handing their events to ``sink``; ``False`` if stopped.

        ``should_stop``: withdraw the queued bundles and wait for those in flight to stop at their next report.
        ``give_up``: return at once, without waiting for bundles in flight (their runners may hang: the caller
        then ends the pool with :meth:`kill`).
        ``refill``: asked for more bundles each time one ends (the paper protocol's seed repeats of a task whose
        grid is done); what it returns joins the queue, so the runners go on without waiting for the rest.
        :attr:`last_busy_s` is then the runner-seconds this call's bundles took.
        """
        import ray

        works: dict[str, Bundle] = {}
        pending: set[str] = set()

        def put(more: Sequence[Bundle]) -> None:
            for bundle in more:
                works[bundle.bundle_id] = bundle
                pending.add(bundle.bundle_id)
                sink.register(bundle.bundle_id, bundle.trial_ids)
            ray.get(self.dispatcher.put.remote([bundle.to_wire() for bundle in more]))

        put(bundles)
        stopped = False
        next_notice_check = time.monotonic() + 0.5
        while pending:
            if give_up is not None and give_up():
                stopped = True
                break
            try:
                kind, payload = self.outbox.items.get(timeout=0.2)
            except queue.Empty:
                if not self._thread.is_alive() or len(self.gone) >= self.shape.slots:
                    break  # the experiment ended (or every runner failed for good): nothing more will come
                kind, payload = "", None
            if kind == "result":
                bundle_id = payload[RESULT_BUNDLE]
                if bundle_id in works:
                    events = decode_events(payload.get(RESULT_EVENTS) or [])
                    if events:
                        sink.write(bundle_id, events)
                    if payload.get(RESULT_BUNDLE_DONE):
                        pending.discard(bundle_id)
                        if not stopped:
                            sink.fail_unfinished(bundle_id, "the bundle ended without a result for this trial")
                            if refill is not None and not should_stop():
                                more = refill()
                                if more:
                                    put(more)
            elif kind == "runner_gone":
                self.gone.add(payload)
                ray.get(self.dispatcher.runner_gone.remote(payload))
                next_notice_check = time.monotonic()
            elif kind == "runner_restarting":
                ray.get(self.dispatcher.runner_gone.remote(payload))  # its bundle: queued again (or given up)
                next_notice_check = time.monotonic()
            if time.monotonic() >= next_notice_check:
                next_notice_check = time.monotonic() + 0.5
                for bundle_id, what, runner in ray.get(self.dispatcher.take_notices.remote()):
                    if bundle_id not in works:
                        continue
                    if what == "retried":
                        self.retries += 1
                        logger.warning("runner %s died running bundle %s; running it again", runner, bundle_id)
                    else:
                        pending.discard(bundle_id)
                        if what == "lost":
                            error = self.outbox.runner_errors.get(runner, "the runner process died")
                            sink.fail_unfinished(bundle_id, f"Ray Tune runner failed after retries: {error}")
            if not stopped and should_stop():
                stopped = True
                ray.get(self.dispatcher.withdraw.remote(list(pending)))
                # Queued bundles are dropped; wait only for those in flight to stop at their next report.
                pending &= set(ray.get(self.dispatcher.in_flight_bundles.remote()))
        if pending and not stopped:
            reason = repr(self.error) if self.error else "every runner of the warm pool is gone"
            for bundle_id in pending:
                sink.fail_unfinished(bundle_id, f"Ray Tune runner failed after retries: {reason}")
        try:
            self.last_busy_s = ray.get(self.dispatcher.busy_seconds.remote(list(works)), timeout=10)
        except Exception:  # noqa: BLE001 - a dead dispatcher: this run's slot use is not measured
            self.last_busy_s = None
        self.last_used = time.monotonic()
        return not stopped

    def wait_until_warm(self, timeout: float = 60.0) -> bool:
        """Wait until every runner has started (imports done); ``False`` if that took over ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.outbox.pids) < self.shape.slots and time.monotonic() < deadline and self.alive:
            time.sleep(0.05)
        return len(self.outbox.pids) >= self.shape.slots

    def runner_pids(self) -> set[int]:
        """The process ids of the runners so far (a restarted runner adds one)."""
        return set(self.outbox.pids)

    def kill(self, timeout: float = 60.0) -> None:
        """End the pool whatever its runners are doing (a hung trial, a stopped process): their actors are killed,
        then the experiment ends as in :meth:`close` (waiting at most ``timeout`` s for its thread)."""
        import ray

        self.stopper.end()
        try:
            actors = ray.get(self.dispatcher.runner_actors.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - a dead dispatcher knows no runners; the experiment still ends
            actors = []
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                logger.debug("warm pool %s: a runner was already gone", self.name)
        self.close(timeout)

    def close(self, timeout: float | None = None) -> None:
        """End the runners' Tune experiment; waits for its thread to end (at most ``timeout`` s if given)."""
        import ray

        self.stopper.end()  # the experiment ends even when its runners cannot reach the dispatcher
        try:
            ray.get(self.dispatcher.close.remote(self.shape.slots), timeout=10)
        except Exception:  # noqa: BLE001 - the actor may already be gone with Ray
            logger.debug("warm pool %s: dispatcher already gone", self.name)
        self._thread.join(timeout)
        try:
            ray.kill(self.dispatcher)
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.storage, ignore_errors=True)
