"""Benchmark tasks and the trial runner."""

from nero_study.errors import TaskConfigError
from nero_study.tasks.base import Diverged, EvalPoint, Task, TrialContext, TrialResult, TrialSpec
from nero_study.tasks.registry import get_task, list_tasks, task_names
from nero_study.tasks.runner import run_trial

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
