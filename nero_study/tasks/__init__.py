"""Benchmark tasks and the trial runner."""

from nero_study.tasks.base import (
    Diverged,
    EvalPoint,
    Task,
    TaskConfigError,
    TrialContext,
    TrialResult,
    TrialSpec,
    run_trial,
)
from nero_study.tasks.registry import get_task, list_tasks, task_names

__all__ = [
    "Diverged",
    "EvalPoint",
    "Task",
    "TaskConfigError",
    "TrialContext",
    "TrialResult",
    "TrialSpec",
    "get_task",
    "list_tasks",
    "run_trial",
    "task_names",
]
