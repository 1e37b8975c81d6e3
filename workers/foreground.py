"""One sweep run in the foreground (``nero-study sweep``): queued, claimed and run by this process.

Running the same spec again resumes its sweep (the idempotency key is the spec's hash): finished trials are kept
and only the rest run, also after this process was killed (its lease is taken over at once when the dead owner
was a ``nero-study sweep`` on this host). The sweep runs on a Tune experiment of its own, not on warm runners:
there is no later sweep to keep them warm for.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass

from nero_study.settings import Settings
from nero_study.store import repo
from nero_study.study.queue import queue_sweep
from nero_study.study.sink import ProgressHook
from nero_study.study.spec import SweepSpec
from nero_study.vocabulary import SWEEP_COMPLETED
from workers.worker import SweepWorker

_OWNER_PREFIX = "cli:"


class SweepHeldElsewhere(RuntimeError):
    """The sweep of this spec is being run by another live process."""


@dataclass(frozen=True)
class ForegroundRun:
    sweep_id: str
    status: str  # the sweep's final status; at once the stored one when it had run to its end before


def run_sweep_in_foreground(
    spec: SweepSpec,
    settings: Settings,
    *,
    name: str,
    new: bool = False,
    on_progress: ProgressHook | None = None,
) -> ForegroundRun:
    """Queue ``spec`` (or find its earlier sweep), claim it and run it to its end in this process.

    ``new``: a new sweep even if this spec ran before. Raises :class:`SweepHeldElsewhere` when a live process
    holds the sweep. ``on_progress`` gets the engine's progress as trials finish.
    """
    key = _OWNER_PREFIX + hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    if new:
        key = f"{key}:{uuid.uuid4().hex}"
    worker = SweepWorker(settings, owner=f"{_OWNER_PREFIX}{_host_pid()}", warm_pool=False)
    with worker.session_factory() as session:
        record, _ = queue_sweep(session, spec, name=name, idempotency_key=key)
        sweep_id, status = record.id, record.status
    if status in SWEEP_COMPLETED:
        return ForegroundRun(sweep_id, status)
    with worker.session_factory() as session:
        current = repo.get_sweep(session, sweep_id=sweep_id)
        claimed = repo.claim_sweep(
            session,
            sweep_id=sweep_id,
            owner=worker.owner,
            lease_seconds=settings.lease_seconds,
            take_over_from=current.lease_owner if _dead_foreground_owner(current.lease_owner) else None,
        )
    if claimed is None:
        raise SweepHeldElsewhere(f"sweep {sweep_id} is being run by another live process; wait for it or use --new")
    worker.install_signal_handlers()
    final = worker.process(sweep_id, spec.model_dump(mode="json"), claimed.attempts, on_progress=on_progress)
    return ForegroundRun(sweep_id, final)


def _dead_foreground_owner(owner: str | None) -> bool:
    """Whether ``owner`` is a foreground sweep process on this host that no longer runs (killed)."""
    if not owner or not owner.startswith(f"{_OWNER_PREFIX}{socket.gethostname()}:"):
        return False
    try:
        pid = int(owner.rsplit(":", 1)[1])
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return pid == os.getpid()


def _host_pid() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
