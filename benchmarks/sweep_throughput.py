"""Sweep throughput: a 16-trial lr sweep of digits-mlp at the proxy budget, side by side in one run:

(a) a bare Ray Tune Tuner with actor reuse, (b) nero-study packed, (c) nero-study batched, against the
trials run one by one in one process. Prints wall time, seconds of overhead per trial over the trials'
own compute, and throughput ratios. Targets on a 2-core machine: (b) <= 0.1 s overhead per trial;
(c) >= 1.5x the throughput of running the trials one by one in one process. Usage:

    .venv/bin/python benchmarks/sweep_throughput.py [--trials 16] [--budget proxy] [--slots 2] [--optimizer nero]
"""

from __future__ import annotations

import argparse

from _sweeps import Timing, bare_tuner, lr_grid, nero_study_engine, print_table, sequential_compute, start_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--budget", default="proxy", choices=["smoke", "proxy"])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--optimizer", default="nero")
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()

    from nero_study.optim.registry import get_optimizer
    from nero_study.study.plan import plan_trials
    from nero_study.study.spec import SweepSpec

    default = get_optimizer(args.optimizer).default_lr
    grid = [lr for lr in lr_grid(args.trials, 1e-4, 1.0) if lr != default][: args.trials - 1]
    spec_data = {
        "tasks": [args.task],
        "optimizers": [args.optimizer],
        "lrs": grid,
        "budget": args.budget,
        "resources": {"cpu": 1},
    }
    specs = [item.spec for item in plan_trials(SweepSpec.model_validate(spec_data))]
    print(f"{len(specs)} trials: {args.task} / {args.optimizer} at the {args.budget} budget, {args.slots} slots")
    compute_s, _ = sequential_compute(specs)
    start_ray(args.slots)
    rows = [
        Timing("one by one in one process", compute_s, len(specs), "no Ray; the trials' own compute"),
        Timing("(a) bare Tune Tuner (reuse_actors)", bare_tuner(specs, args.slots), len(specs)),
    ]
    for mode in ("packed", "batched"):
        wall, execution, counts = nero_study_engine({**spec_data, "execution": mode})
        rows.append(Timing(f"({'b' if mode == 'packed' else 'c'}) nero-study {mode}", wall, len(specs),
                           f"ran as {execution}; {counts}"))
    print_table(rows, compute_s, args.slots, reference="one by one in one process")
    sequential = rows[0].wall_s
    packed, batched = rows[2], rows[3]
    packed_overhead = (packed.wall_s - compute_s / args.slots) / packed.trials
    print(f"\n(b) packed overhead per trial: {packed_overhead:.3f} s (target <= 0.1)")
    print(f"(c) batched throughput vs one by one: {sequential / batched.wall_s:.2f}x (target >= 1.5)")
    print(f"(a) bare Tuner / (b) packed: {rows[1].wall_s / packed.wall_s:.2f}x;  (a) / (c) batched: "
          f"{rows[1].wall_s / batched.wall_s:.2f}x")


if __name__ == "__main__":
    main()
