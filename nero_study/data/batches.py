"""Seeded mini-batch orders, shared by the in-memory loaders here and the tasks' training loops."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def minibatch_indices(
    n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """A seeded random permutation of ``range(n)`` cut into batches (the data order of one epoch)."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
