"""The execution protocol: what crosses the process boundary between a sweep and the Ray workers running it.

The driver (a worker's sweep engine) hands a :class:`Bundle` of trials to a Ray process; that process runs them
and streams :data:`Event`\\ s back through Ray Tune reports, under the result keys below; the driver writes the
events to the store (``nero_study.study.sink``). Ray workers never touch the database.

Over the wire (a Tune ``param_space`` entry, a Tune result) bundles and events are plain dicts
(:meth:`Bundle.to_wire`, :func:`encode_events`); in each process they are these typed values. This module
imports nothing heavy, so a Ray worker pays for none of the driver's layers.

Events, per member (the trial's index in its bundle):

- :class:`TrialStarted`: the member began training;
- :class:`TrialEvaluated`: one point of its learning curve;
- :class:`TrialFinished`: its outcome (succeeded, diverged or failed) with the final numbers;
- :class:`ExecutionChosen` (once per bundle): how the bundle ran (separate, packed or batched).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nero_study.tasks.base import EvalPoint, TrialResult, TrialSpec
from nero_study.vocabulary import ExecutionMode, ExecutionUsed, TrialOutcome

# --- the keys of a Tune result that carry the protocol ---------------------------------------------------
#: A list of encoded events (:func:`encode_events`).
RESULT_EVENTS = "nero_events"
#: The bundle a warm runner's report belongs to.
RESULT_BUNDLE = "nero_bundle"
#: True on a warm runner's last report of a bundle.
RESULT_BUNDLE_DONE = "nero_bundle_done"
#: A warm runner's process id, in its first report (it has started and imported what training needs).
RESULT_RUNNER_PID = "nero_runner_pid"
#: The objective a TPE trial reports to Optuna (lower is better).
RESULT_OBJECTIVE = "objective"


@dataclass(frozen=True)
class Bundle:
    """Trials of one task run by one Ray process, back to back (``packed``/``separate``) or stacked (``batched``).

    ``trial_ids`` are the store's ids of ``specs`` (the driver's bookkeeping; a Ray worker does not use them).
    ``execution`` is the mode asked for; ``batched`` falls back to packed for members that cannot be stacked.
    """

    bundle_id: str
    trial_ids: tuple[int, ...]
    specs: tuple[TrialSpec, ...]
    execution: ExecutionMode

    def __post_init__(self) -> None:
        if len(self.trial_ids) != len(self.specs):
            raise ValueError(f"A bundle needs one trial id per spec; got {len(self.trial_ids)} and {len(self.specs)}")

    @property
    def task(self) -> str:
        return self.specs[0].task

    def to_wire(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "trial_ids": list(self.trial_ids),
            "specs": [spec.to_dict() for spec in self.specs],
            "execution": self.execution,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Bundle:
        return cls(
            bundle_id=str(data["bundle_id"]),
            trial_ids=tuple(int(i) for i in data["trial_ids"]),
            specs=tuple(TrialSpec.from_dict(item) for item in data["specs"]),
            execution=data["execution"],
        )


# --- events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialStarted:
    member: int


@dataclass(frozen=True)
class TrialEvaluated:
    member: int
    step: int
    epoch: float
    train_loss: float
    metric: float

    @classmethod
    def of(cls, member: int, point: EvalPoint) -> TrialEvaluated:
        return cls(member, point.step, point.epoch, point.train_loss, point.metric)

    def point(self) -> dict[str, float]:
        """The curve point as the store takes it."""
        return {"step": self.step, "epoch": self.epoch, "train_loss": self.train_loss, "metric": self.metric}


@dataclass(frozen=True)
class TrialFinished:
    """A member's outcome: the numbers :func:`nero_study.store.repo.finish_trial` stores."""

    member: int
    status: TrialOutcome
    metric: float
    best_metric: float
    initial_metric: float
    metric_name: str
    lower_is_better: bool
    wall_s: float
    device: str
    steps: int
    error: str | None

    @classmethod
    def of(cls, member: int, result: TrialResult) -> TrialFinished:
        return cls(
            member=member,
            status=result.status,
            metric=result.metric,
            best_metric=result.best_metric,
            initial_metric=result.initial_metric,
            metric_name=result.metric_name,
            lower_is_better=result.lower_is_better,
            wall_s=result.wall_s,
            device=result.device,
            steps=result.steps,
            error=result.error,
        )

    @classmethod
    def failed(cls, member: int, spec: TrialSpec, error: BaseException, wall_s: float) -> TrialFinished:
        """A member that could not even start (a bad option, missing data): ``failed`` with the message."""
        return cls(
            member=member,
            status="failed",
            metric=math.nan,
            best_metric=math.nan,
            initial_metric=math.nan,
            metric_name="",
            lower_is_better=True,
            wall_s=wall_s,
            device=spec.device or "",
            steps=0,
            error=f"{type(error).__name__}: {error}",
        )

    def fields(self) -> dict[str, Any]:
        """Everything but ``member``: the keyword arguments of ``finish_trial``."""
        data = asdict(self)
        del data["member"]
        return data


@dataclass(frozen=True)
class ExecutionChosen:
    mode: ExecutionUsed


Event = TrialStarted | TrialEvaluated | TrialFinished | ExecutionChosen
Emit = Callable[[Event], None]

_KINDS: dict[str, type] = {
    "started": TrialStarted,
    "evaluated": TrialEvaluated,
    "finished": TrialFinished,
    "execution": ExecutionChosen,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def encode_events(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events as plain dicts for a Tune report (``{"kind": ..., **fields}``)."""
    return [{"kind": _KIND_OF[type(event)], **asdict(event)} for event in events]


def decode_events(items: Sequence[dict[str, Any]]) -> list[Event]:
    """The inverse of :func:`encode_events`; an unknown kind is an error naming the valid ones."""
    events: list[Event] = []
    for item in items:
        fields = dict(item)
        kind = fields.pop("kind", None)
        if kind not in _KINDS:
            raise ValueError(f"Unknown event kind {kind!r}; valid: {', '.join(_KINDS)}")
        events.append(_KINDS[kind](**fields))
    return events


class EventBuffer:
    """Collects events and hands them to ``send`` in batches, at most every ``flush_seconds``.

    Each Ray Tune report is a round trip to the driver, so reporting every evaluation would cost more than
    short trials themselves; a member's :class:`TrialFinished` is always sent at once.
    """

    def __init__(self, send: Callable[[list[Event]], None], flush_seconds: float = 0.5) -> None:
        self._send = send
        self._flush_seconds = flush_seconds
        self._events: list[Event] = []
        self._last_flush = time.monotonic()

    def emit(self, event: Event) -> None:
        self._events.append(event)
        if isinstance(event, TrialFinished) or time.monotonic() - self._last_flush >= self._flush_seconds:
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


__all__ = [
    "RESULT_BUNDLE",
    "RESULT_BUNDLE_DONE",
    "RESULT_EVENTS",
    "RESULT_OBJECTIVE",
    "RESULT_RUNNER_PID",
    "Bundle",
    "Emit",
    "Event",
    "EventBuffer",
    "ExecutionChosen",
    "TrialEvaluated",
    "TrialFinished",
    "TrialStarted",
    "decode_events",
    "encode_events",
]
