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
