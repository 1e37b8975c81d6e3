"""The functions Ray Tune runs in its worker processes (trainables).

Kept apart from the engine so that a Tune actor imports only what training needs (torch and the task
code), not the engine's database, pandas and pydantic layers: each new actor starts seconds sooner.
"""

from __future__ import annotations

import math
from typing import Any

from nero_study.study.execute import EventBuffer, run_bundle, run_member
from nero_study.tasks.base import TrialSpec


def bundle_trainable(config: dict[str, Any]) -> None:
    """One Tune trial: run a bundle of trials, reporting their events in batches."""
    import torch
    from ray import tune

    threads = int(config.get("threads", 1))
    torch.set_num_threads(max(1, threads))
    specs = [TrialSpec.from_dict(item) for item in config["work"]["bundle"]]
    buffer = EventBuffer(lambda events: tune.report({"nero_events": events}), config.get("flush_seconds", 0.5))
    used = run_bundle(specs, buffer.emit, execution=config["work"].get("execution", "packed"))
    buffer.emit({"event": "execution", "member": -1, "mode": used})
    buffer.flush()


def tpe_trainable(config: dict[str, Any]) -> None:
    """One Tune trial proposed by Optuna's TPE: one trial at ``config['lr']``; reports its objective.

    Tune checks that every report carries the searcher's metric, so the trial's events go in one
    report at its end together with the objective (lower is better; a diverged or failed trial counts
    as its metric at initialisation, as in the analysis).
    """
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    spec = TrialSpec.from_dict({**config["base"], "lr": float(config["lr"])})
    events: list[dict[str, Any]] = []
    result = run_member(0, spec, events.append)
    if result is None or result.status != "succeeded" or not math.isfinite(result.metric):
        initial = result.initial_metric if result is not None else math.nan
        value = initial if math.isfinite(initial) else 1e12
        oriented = value if (result is None or result.lower_is_better) else -value
    else:
        oriented = result.metric if result.lower_is_better else -result.metric
    tune.report({"nero_events": events, "objective": float(oriented)})


class _Withdrawn(BaseException):
    """Raised at a report when the sweep withdrew the bundle (cancel, lost lease, shutdown).

    A ``BaseException``, so the members' ``except Exception`` (a member's own error fails only that
    member) lets it through to the runner loop.
    """


def runner_trainable(config: dict[str, Any]) -> None:
    """One warm runner of a :class:`~nero_study.study.pool.WarmPool`: bundles from its dispatcher until closed."""
    import os

    import ray
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    runner = int(config["runner"])
    dispatcher = ray.get_actor(config["pool"], namespace=config["namespace"])
    # While no bundle waits yet: the first optimiser built imports torch._dynamo (torch.optim wraps
    # add_param_group with it), seconds that the runner's first bundle would otherwise pay.
    import torch._dynamo  # noqa: F401

    tune.report({"nero_runner_pid": os.getpid()})
    while True:
        work = ray.get(dispatcher.take.remote(runner))
        if work is None:
            return
        work_id = work["work_id"]

        def send(events: list[dict[str, Any]], work_id: str = work_id) -> None:
            tune.report({"nero_events": events, "nero_work": work_id})
            if ray.get(dispatcher.is_withdrawn.remote(work_id)):
                raise _Withdrawn

        buffer = EventBuffer(send, config.get("flush_seconds", 0.5))
        specs = [TrialSpec.from_dict(item) for item in work["bundle"]]
        try:
            used = run_bundle(specs, buffer.emit, execution=work.get("execution", "packed"))
            buffer.emit({"event": "execution", "member": -1, "mode": used})
            final = buffer.take()
        except _Withdrawn:
            final = []
        tune.report({"nero_events": final, "nero_work": work_id, "nero_work_done": True})
        ray.get(dispatcher.finish.remote(runner, work_id))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an idle runner keeps no cached GPU memory from the bundle it ran
