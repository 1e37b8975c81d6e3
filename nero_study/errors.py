"""The errors the library raises for bad input, in one place. Each is a ``ValueError``: its message names what
is wrong and what is allowed, and the CLI and the API show it as it is."""

from __future__ import annotations


class TaskConfigError(ValueError):
    """A task option or data set is wrong; the message says what is allowed or expected where."""


class UnknownTaskError(ValueError):
    """A task name that is not registered; the message lists the valid ones."""


class UnknownOptimizerError(ValueError):
    """An optimiser name that is not registered; the message lists the valid ones."""



class ResultsFileError(ValueError):
    """A results file to import has bad rows; the message lists each as ``row N, column C: ...``."""


class InfeasibleResourcesError(ValueError):
    """A sweep asks for more per trial than the cluster has in all; the message names the resource."""
