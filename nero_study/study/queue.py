"""The one way to queue a sweep: used by the API, ``nero-study sweep``, the demo seeding and the benchmarks.

The ``sweeps`` table is the queue (docs/architecture.md): a queued row waits for a worker to claim it. What is
stored is the validated spec as the user gave it (``max_trials`` only if they set one; the service's limit is
applied when queuing, never stored), and the number of trials it plans.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from nero_study.store import repo
from nero_study.store.models import Sweep
from nero_study.study.spec import SweepSpec, demo_spec

_NAME_LENGTH = 200


def default_name(spec: SweepSpec) -> str:
    """A name for an unnamed sweep: its tasks x its optimiser labels (at most 200 characters)."""
    name = f"{', '.join(spec.tasks)} x {', '.join(spec.labels)} ({spec.protocol})"
    return name if len(name) <= _NAME_LENGTH else name[: _NAME_LENGTH - 3] + "..."


def queue_sweep(
    session: Session, spec: SweepSpec, *, name: str | None = None, idempotency_key: str | None = None
) -> tuple[Sweep, bool]:
    """Store ``spec`` as a queued sweep; returns it and whether it was created (``False``: the sweep an earlier
    call with the same ``idempotency_key`` created). ``name`` defaults to the spec's name, then to
    :func:`default_name`. Raises ``repo.IdempotencyKeyReused`` when the key was used for another spec.
    """
    return repo.create_sweep(
        session,
        spec=spec.model_dump(mode="json"),
        name=name or spec.name or default_name(spec),
        idempotency_key=idempotency_key,
        planned_trials=spec.trial_count(),
    )


def queue_demo_if_empty(session: Session) -> Sweep | None:
    """Queue the demo sweep (:func:`~nero_study.study.spec.demo_spec`) when the store has no sweep at all."""
    if repo.list_sweeps(session, offset=0, limit=1)[1] > 0:
        return None
    return queue_sweep(session, demo_spec())[0]
