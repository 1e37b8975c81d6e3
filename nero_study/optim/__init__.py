"""Optimisers: Nero, LAMB (and Madam), and the registry with SGD and Adam from torch."""

from nero_study.optim.lamb import Lamb
from nero_study.optim.madam import Madam
from nero_study.optim.nero import Nero
from nero_study.optim.registry import build, get_optimizer, list_optimizers

__all__ = ["Lamb", "Madam", "Nero", "build", "get_optimizer", "list_optimizers"]
