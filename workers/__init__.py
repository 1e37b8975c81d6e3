"""Sweep workers: claim queued sweeps from the store, keep a lease alive, run them on Ray Tune."""

from workers.worker import SweepWorker

__all__ = ["SweepWorker"]
