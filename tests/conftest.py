"""Project-wide fixtures: one Ray instance per test session (``ray.init`` costs seconds here)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Local Ray with this machine's CPUs, started once and shut down at the end of the session."""
    import ray

    from nero_study.study.cluster import ensure_ray

    ensure_ray(num_cpus=os.cpu_count() or 2)
    yield
    ray.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    # One intra-op thread: the suite shares two cores with Ray workers and servers it starts.
    import torch

    torch.set_num_threads(1)
