"""Where a sweep's fixed start-up goes: Tune's own price per fit, and what a fresh Ray worker imports.

This is the price of a fresh Tune experiment (`nero-study sweep`, a worker's first sweep); a worker's
later sweeps run on warm runners that paid it once (``nero_study.study.pool``).

Every ``Tuner.fit`` starts its trainable actors in fresh worker processes (Tune gives them a runtime
environment of their own, so they never land on the workers Ray prestarts), and each such process
imports torch, Ray Tune and, on the first optimiser or ``torch.func`` call, ``torch._dynamo``. This
prints, on local Ray with ``--slots`` CPUs:

* the wall time of ``Tuner.fit`` for ``--slots`` trials whose function does nothing, and again when the
  function imports torch (Tune's own start-up, then with the heaviest import);
* the seconds each import takes in a fresh Ray actor, in the order a trial meets them.

Measured (2026-11-28, 2 slots): ``Tuner.fit`` of 2 no-op trials 2.96-3.11 s, 5.30-5.83 s when they import
torch; in a fresh actor: ready after ~1.0-1.1 s, then torch ~1.9-2.0 s, ray.tune ~1.1 s, torch._dynamo ~1.8-2.0 s
(scikit-learn, 1.3-2.2 s, is no longer imported: the digits loader reads its data file directly). Ray's
``preload_python_modules`` made no difference: Tune starts its trainable actors with a runtime environment of
their own (``ray/tune/execution/class_cache.py``), so they never land on Ray's prestarted workers. Hence warm
runners (``nero_study.study.pool``).

    .venv/bin/python benchmarks/worker_startup.py [--slots 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

IMPORTS = ("torch", "ray.tune", "nero_study.study.trainables", "torch._dynamo", "sklearn")


def _noop(config: dict) -> None:
    from ray import tune

    tune.report({"done": 1})


def _import_torch(config: dict) -> None:
    import torch  # noqa: F401
    from ray import tune

    tune.report({"done": 1})


def fit_seconds(trainable: object, slots: int) -> float:
    from ray import tune

    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"index": tune.grid_search(list(range(slots)))},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=slots),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="bench-startup-"), verbose=0),
    ).fit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=args.slots, include_dashboard=False, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Fresh:
        def time_imports(self, names: tuple[str, ...]) -> list[float]:
            import importlib

            seconds = []
            for name in names:
                start = time.perf_counter()
                importlib.import_module(name)
                seconds.append(time.perf_counter() - start)
            return seconds

    for repeat in range(args.repeats):
        noop = fit_seconds(_noop, args.slots)
        with_torch = fit_seconds(_import_torch, args.slots)
        start = time.perf_counter()
        actor = Fresh.remote()
        seconds = ray.get(actor.time_imports.remote(IMPORTS))
        ray.kill(actor)
        ready = time.perf_counter() - start - sum(seconds)
        imports = ", ".join(f"{name} {value:.2f}" for name, value in zip(IMPORTS, seconds, strict=True))
        print(f"repeat {repeat + 1}: Tuner.fit of {args.slots} no-op trials {noop:.2f} s, importing torch "
              f"{with_torch:.2f} s | a fresh actor: ready {ready:.2f} s, then imports (s): {imports}")
    print("sklearn is listed for comparison: nero-study's digits loader no longer imports it.")


if __name__ == "__main__":
    main()
