"""Ray bootstrap and slot maths: how a driver connects to Ray, and how many trials of a sweep run at once.

A *slot* is room on the cluster for one trial (or one warm runner) with the sweep's per-trial resources. Every
execution path (a fresh Tune experiment per sweep, warm runners, TPE) lays its trials out with
:func:`pool_shape`, so they agree on resources, concurrency and torch threads.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from nero_study.study.spec import Resources


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to Ray once per process: the cluster at ``RAY_ADDRESS`` if set, else a local instance."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, **kwargs)


def gcs_address(address: str | None = None) -> tuple[str, int] | None:
    """The Ray head's GCS as ``(host, port)`` when ``address`` (default ``RAY_ADDRESS``) names one as
    ``host:port``; ``None`` for a local Ray, ``auto`` or a Ray client (``ray://``) address."""
    address = address if address is not None else os.environ.get("RAY_ADDRESS", "")
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or "://" in address or not port.isdigit():
        return None
    return host, int(port)


def gcs_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the Ray head's GCS accepts a TCP connection (a cheap liveness probe that needs no Ray call: a
    Ray call on a driver whose head is gone blocks until Ray gives up on the head and ends the process)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: The resource Ray gives only its head node.
HEAD_NODE_RESOURCE = "node:__internal_head__"


def head_node_scheduling() -> Any:
    """A scheduling strategy that places a small (``num_cpus=0``) actor on the cluster's head node. The head lives
    as long as the cluster does, so a driver's helper actors placed there are not lost with a worker node (on a
    local single-node Ray, the one node is the head). ``"DEFAULT"`` where no live node is the head.

    Hard affinity: Ray's soft affinity is a preference that its scheduler often does not follow. On a two-node
    cluster (Ray 2.60), about half of the ``num_cpus=0`` actors asked for the head softly started on the other
    node, and a warm pool whose dispatcher went there died with that node (``test_cluster``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    for node in ray.nodes():
        if node.get("Alive") and HEAD_NODE_RESOURCE in node.get("Resources", {}):
            return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
    return "DEFAULT"


def infeasible_resources(resources: Resources, totals: dict[str, float] | None = None) -> str | None:
    """Why no trial with ``resources`` can ever run on the connected cluster (``None``: it fits).

    ``totals``: the cluster's total resources (``ray.cluster_resources()`` by default). A trial must fit
    within the totals; a sweep that does not is failed at once rather than waiting forever for room.
    """
    if totals is None:
        import ray

        totals = ray.cluster_resources()
    problems = []
    for field, key, unit in (("cpu", "CPU", "CPUs"), ("gpu", "GPU", "GPUs")):
        wanted = float(getattr(resources, field))
        have = float(totals.get(key, 0.0))
        if wanted > 0 and wanted > have:
            problems.append(f"resources.{field} {wanted:g} per trial, but the Ray cluster has {have:g} {unit} in all")
    return "; ".join(problems) or None


def cluster_slots(cpu_per_trial: float, gpu_per_trial: float, max_concurrency: int | None) -> int:
    """Trials that fit on the connected cluster at once with these resources each (at least 1)."""
    import ray

    resources = ray.cluster_resources()
    slots = max(1, int(resources.get("CPU", 1) // max(cpu_per_trial, 1e-9)))
    if gpu_per_trial > 0:
        slots = min(slots, max(1, int(resources.get("GPU", 0) // gpu_per_trial)))
    if max_concurrency:
        slots = min(slots, max_concurrency)
    return slots


@dataclass(frozen=True)
class PoolShape:
    """How a sweep's trials are laid out: resources per trial (or runner), how many at once, torch threads."""

    cpu: float
    gpu: float
    slots: int
    threads: int

    @property
    def resources(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


def pool_shape(resources: Resources, max_concurrency: int | None = None) -> PoolShape:
    """The layout of a sweep with these per-trial resources: one slot per fit on the cluster."""
    slots = cluster_slots(float(resources.cpu), float(resources.gpu), max_concurrency)
    return PoolShape(float(resources.cpu), float(resources.gpu), slots, max(1, int(resources.cpu)))
