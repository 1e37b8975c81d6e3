"""Run a *bundle* of trials in one warm process and turn their progress into events.

A bundle is a list of trials that share a task; the sweep engine hands one bundle to one Ray Tune
trial (trial packing), so Tune's fixed price per trial is paid once per bundle, and data and model code
are loaded once. Each member still streams its own curve and ends on its own: a member that diverges or
fails does not take the others down.

Events are plain dicts (picklable, JSON-safe apart from floats):
``{"event": "start", "member": i}``, ``{"event": "eval", "member": i, "step", "epoch", "train_loss",
"metric"}`` and ``{"event": "done", "member": i, "status", "metric", ...}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from nero_study.tasks.base import EvalPoint, TrialResult, TrialSpec, run_trial

Event = dict[str, Any]
Emit = Callable[[Event], None]

EXECUTION_MODES: tuple[str, ...] = ("auto", "separate", "packed", "batched")


def done_event(member: int, result: TrialResult) -> Event:
    return {
        "event": "done",
        "member": member,
        "status": result.status,
        "metric": result.metric,
        "best_metric": result.best_metric,
        "initial_metric": result.initial_metric,
        "metric_name": result.metric_name,
        "lower_is_better": result.lower_is_better,
        "wall_s": result.wall_s,
        "device": result.device,
        "steps": result.steps,
        "error": result.error,
    }


def failed_event(member: int, spec: TrialSpec, error: BaseException, wall_s: float) -> Event:
    """A member that could not even start (bad option, missing data): status ``failed`` with the message."""
    return {
        "event": "done",
        "member": member,
        "status": "failed",
        "metric": math.nan,
        "best_metric": math.nan,
        "initial_metric": math.nan,
        "metric_name": "",
        "lower_is_better": True,
        "wall_s": wall_s,
        "device": spec.device or "",
        "steps": 0,
        "error": f"{type(error).__name__}: {error}",
    }


def run_member(member: int, spec: TrialSpec, emit: Emit) -> TrialResult | None:
    """Run one trial of a bundle, emitting its events; never raises."""
    emit({"event": "start", "member": member})

    def report(point: EvalPoint) -> None:
        emit({"event": "eval", "member": member, **point.to_dict()})

    start = time.perf_counter()
    try:
        result = run_trial(spec, reporter=report)
    except Exception as exc:  # noqa: BLE001 - one member's error must not stop the bundle
        emit(failed_event(member, spec, exc, time.perf_counter() - start))
        return None
    emit(done_event(member, result))
    return result


def run_bundle(specs: Sequence[TrialSpec], emit: Emit, *, execution: str = "packed") -> str:
    """Run ``specs`` back to back (or batched, where supported); returns the execution mode used."""
    if execution == "batched":
        from nero_study.study.batched import run_batched_bundle, supports_batched

        if supports_batched(specs):
            run_batched_bundle(specs, emit)
            return "batched"
    for member, spec in enumerate(specs):
        run_member(member, spec, emit)
    return "separate" if execution == "separate" else "packed"


class EventBuffer:
    """Collects events and hands them to ``send`` in batches, at most every ``flush_seconds``.

    Each Ray Tune report is a round trip to the driver, so reporting every evaluation would cost more
    than the short trials themselves; a member's ``done`` is always flushed at once.
    """

    def __init__(self, send: Callable[[list[Event]], None], flush_seconds: float = 0.5) -> None:
        self._send = send
        self._flush_seconds = flush_seconds
        self._events: list[Event] = []
        self._last_flush = time.monotonic()

    def emit(self, event: Event) -> None:
        self._events.append(event)
        if event["event"] == "done" or time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()

    def take(self) -> list[Event]:
        """The events not sent yet, removed from the buffer (for a caller that sends them itself)."""
        events, self._events = self._events, []
        return events

    def flush(self) -> None:
        if self._events:
            events, self._events = self._events, []
            self._send(events)
        self._last_flush = time.monotonic()
