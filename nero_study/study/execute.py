"""Run a :class:`~nero_study.study.protocol.Bundle` in one warm process and turn its progress into events.

The sweep engine hands one bundle to one Ray process (a Tune trial, or a warm runner), so the fixed price of
a Ray process is paid once per bundle and data and model code load once. Each member still streams its own
curve and ends on its own: a member that diverges or fails does not take the others down.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from nero_study.study.batched import batched_groups, run_batched_group
from nero_study.study.protocol import Emit, ExecutionChosen, TrialEvaluated, TrialFinished, TrialStarted
from nero_study.tasks.base import EvalPoint, TrialResult, TrialSpec
from nero_study.tasks.runner import run_trial
from nero_study.vocabulary import ExecutionMode, ExecutionUsed


def run_member(member: int, spec: TrialSpec, emit: Emit) -> TrialResult | None:
    """Run one trial of a bundle, emitting its events; never raises (an invalid spec is a failed member)."""
    emit(TrialStarted(member))

    def report(point: EvalPoint) -> None:
        emit(TrialEvaluated.of(member, point))

    start = time.perf_counter()
    try:
        result = run_trial(spec, reporter=report)
    except Exception as exc:  # noqa: BLE001 - one member's error must not stop the bundle
        emit(TrialFinished.failed(member, spec, exc, time.perf_counter() - start))
        return None
    emit(TrialFinished.of(member, result))
    return result


def run_bundle(specs: Sequence[TrialSpec], emit: Emit, *, execution: ExecutionMode = "packed") -> ExecutionUsed:
    """Run ``specs`` back to back, or stacked where ``execution`` is ``batched`` and members allow it.

    Emits every member's events, then one :class:`ExecutionChosen`; returns the mode used.
    """
    used: ExecutionUsed = "separate" if execution == "separate" else "packed"
    alone = list(range(len(specs)))
    if execution == "batched":
        groups, alone = batched_groups(specs)
        for members in groups:
            run_batched_group([(member, specs[member]) for member in members], emit)
        if groups:
            used = "batched"
    for member in alone:
        run_member(member, specs[member], emit)
    emit(ExecutionChosen(used))
    return used
