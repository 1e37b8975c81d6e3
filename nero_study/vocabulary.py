"""The project's one vocabulary: statuses, phases, execution modes, protocols, budgets, presets, lr tolerance.

Every layer (store, engine, API schemas, client, dashboards) imports these names instead of re-typing them.
A ``Literal`` type is the source; the tuple beside it is the same values for run-time checks and messages.
The store's first migration keeps its own copy on purpose: a migration is a snapshot of the schema of its day.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

#: ``succeeded``: the sweep ran to its end and none of its trials failed; ``trials_failed``: it ran to its end
#: but some trials failed (an error, not a divergence: diverged is a normal outcome of an lr sweep);
#: ``failed``: the sweep itself could not run (its error says why).
SweepStatus = Literal["queued", "running", "succeeded", "trials_failed", "failed", "cancelled"]
SWEEP_STATUSES: tuple[SweepStatus, ...] = get_args(SweepStatus)
#: A sweep with one of these is over: no worker claims it again.
SWEEP_FINISHED: tuple[SweepStatus, ...] = ("succeeded", "trials_failed", "failed", "cancelled")
#: A finished sweep that ran to its end (its trials are all finished), whether or not some failed.
SWEEP_COMPLETED: tuple[SweepStatus, ...] = ("succeeded", "trials_failed")
#: A sweep with one of these is waiting for a worker or held by one.
SWEEP_ACTIVE: tuple[SweepStatus, ...] = ("queued", "running")

TrialStatus = Literal["pending", "running", "succeeded", "diverged", "failed", "cancelled"]
TRIAL_STATUSES: tuple[TrialStatus, ...] = get_args(TrialStatus)
#: How one run of a trial ends (``run_trial``'s result). ``diverged`` is a normal outcome of an lr sweep.
TrialOutcome = Literal["succeeded", "diverged", "failed"]
TRIAL_OUTCOMES: tuple[TrialOutcome, ...] = get_args(TrialOutcome)
#: A trial with an outcome is finished: a resumed or taken-over sweep keeps it and runs only the others.
TRIAL_FINISHED: tuple[TrialStatus, ...] = TRIAL_OUTCOMES
#: The statuses a trial can end in, a cancel included.
TRIAL_ENDED: tuple[TrialStatus, ...] = (*TRIAL_OUTCOMES, "cancelled")

Phase = Literal["grid", "seeds", "tpe"]
PHASES: tuple[Phase, ...] = get_args(Phase)
#: The ``bracket`` protocol's phases are its rounds: ``bracket-0`` (the coarse grid), ``bracket-1``, ...
BRACKET_PHASE_PREFIX = "bracket-"
#: Longest phase name the store keeps (``trials.phase`` is a ``String(16)``): rounds up to 99999999.
MAX_PHASE_LENGTH = 16
MAX_BRACKET_ROUND = 10 ** (MAX_PHASE_LENGTH - len(BRACKET_PHASE_PREFIX)) - 1

Protocol = Literal["grid", "paper", "tpe", "bracket"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)

#: How a spec asks its trials to run: ``auto`` lets the engine choose ``batched`` where a task can, else packed.
ExecutionMode = Literal["auto", "separate", "packed", "batched"]
EXECUTION_MODES: tuple[ExecutionMode, ...] = get_args(ExecutionMode)
#: How a bundle of trials actually ran.
ExecutionUsed = Literal["separate", "packed", "batched"]

Budget = Literal["smoke", "proxy", "paper"]
BUDGETS: tuple[Budget, ...] = get_args(Budget)

Preset = Literal["paper", "library"]
PRESETS: tuple[Preset, ...] = get_args(Preset)

#: Relative tolerance under which two learning rates are the same point (a default lr already on a grid).
LR_REL_TOL = 1e-9


def bracket_phase(round_index: int) -> str:
    """The phase of the trials a ``bracket`` round added (``bracket-0`` is the coarse grid)."""
    if not 0 <= round_index <= MAX_BRACKET_ROUND:
        raise ValueError(f"Invalid bracket round {round_index}; valid: 0 to {MAX_BRACKET_ROUND}")
    return f"{BRACKET_PHASE_PREFIX}{round_index}"


def bracket_round(phase: object) -> int | None:
    """The round of a ``bracket-N`` phase; ``None`` for any other phase (or a missing one)."""
    if not isinstance(phase, str) or not phase.startswith(BRACKET_PHASE_PREFIX):
        return None
    digits = phase[len(BRACKET_PHASE_PREFIX) :]
    return int(digits) if digits.isdigit() and digits.isascii() else None


def is_phase(phase: object) -> bool:
    """Whether ``phase`` is one the store accepts: one of :data:`PHASES` or a bracket round's."""
    return phase in PHASES or (bracket_round(phase) is not None and len(str(phase)) <= MAX_PHASE_LENGTH)


def same_lr(a: float, b: float) -> bool:
    """Whether two learning rates are the same grid point (relative difference within :data:`LR_REL_TOL`)."""
    return math.isclose(a, b, rel_tol=LR_REL_TOL)
