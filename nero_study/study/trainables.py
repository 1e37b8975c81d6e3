"""The functions Ray Tune runs in its worker processes (trainables).

Kept apart from the engine so that a Tune actor imports only what training needs (torch, the task code and the
protocol), not the driver's database, pandas and pydantic layers: each new actor starts seconds sooner.
Every trainable speaks the protocol of ``nero_study.study.protocol``.
"""

from __future__ import annotations

import math
from typing import Any

from nero_study.study.execute import run_bundle, run_member
from nero_study.study.protocol import (
    RESULT_BUNDLE,
    RESULT_BUNDLE_DONE,
    RESULT_EVENTS,
    RESULT_OBJECTIVE,
    RESULT_RUNNER_PID,
    Bundle,
    Event,
    EventBuffer,
    encode_events,
)
from nero_study.tasks.base import TrialSpec


def bundle_trainable(config: dict[str, Any]) -> None:
    """One Tune trial of a per-sweep experiment: run ``config["bundle"]``, reporting its events in batches."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    bundle = Bundle.from_wire(config["bundle"])
    flush_seconds = config.get("flush_seconds", 0.5)
    buffer = EventBuffer(lambda events: tune.report({RESULT_EVENTS: encode_events(events)}), flush_seconds)
    run_bundle(bundle.specs, buffer.emit, execution=bundle.execution)
    buffer.flush()


def tpe_trainable(config: dict[str, Any]) -> None:
    """One Tune trial proposed by Optuna's TPE: one trial at ``config['lr']``; reports its objective.

    Tune checks that every report carries the searcher's metric, so the trial's events go in one report at its
    end together with the objective (lower is better; a diverged or failed trial counts as its metric at
    initialisation, as in the analysis).
    """
    import torch
    from ray import tune

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    spec = TrialSpec.from_dict({**config["base"], "lr": float(config["lr"])})
    events: list[Event] = []
    result = run_member(0, spec, events.append)
    if result is None or result.status != "succeeded" or not math.isfinite(result.metric):
        initial = result.initial_metric if result is not None else math.nan
        value = initial if math.isfinite(initial) else 1e12
        oriented = value if (result is None or result.lower_is_better) else -value
    else:
        oriented = result.metric if result.lower_is_better else -result.metric
    tune.report({RESULT_EVENTS: encode_events(events), RESULT_OBJECTIVE: float(oriented)})


class _Withdrawn(BaseException):
    """Raised at a report when the sweep withdrew the bundle (cancel, lost lease, shutdown).

    A ``BaseException``, so the members' ``except Exception`` (a member's own error fails only that member)
    lets it through to the runner loop.
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

    # Its own actor, so that the pool can kill a runner whose trial hangs (a stalled sweep).
    ray.get(dispatcher.register.remote(runner, ray.get_runtime_context().current_actor))
    tune.report({RESULT_RUNNER_PID: os.getpid()})
    while True:
        wire = ray.get(dispatcher.take.remote(runner))
        if wire is None:
            return
        bundle = Bundle.from_wire(wire)

        def send(events: list[Event], bundle_id: str = bundle.bundle_id) -> None:
            tune.report({RESULT_EVENTS: encode_events(events), RESULT_BUNDLE: bundle_id})
            if ray.get(dispatcher.is_withdrawn.remote(bundle_id)):
                raise _Withdrawn

        buffer = EventBuffer(send, config.get("flush_seconds", 0.5))
        try:
            run_bundle(bundle.specs, buffer.emit, execution=bundle.execution)
            final = buffer.take()
        except _Withdrawn:
            final = []
        tune.report({RESULT_EVENTS: encode_events(final), RESULT_BUNDLE: bundle.bundle_id, RESULT_BUNDLE_DONE: True})
        ray.get(dispatcher.finish.remote(runner, bundle.bundle_id))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an idle runner keeps no cached GPU memory from the bundle it ran
