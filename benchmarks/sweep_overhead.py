"""Sweep overhead: the same short trials through nero-study's Ray Tune path and through a bare Tune Tuner.

Measured (2026-11-28, 16 smoke trials, 2 slots): bare Tuner 7.27 s, nero-study separate 7.90 s, packed 7.24 s:
separate / bare = 1.09, packed / bare = 1.00.

Prints wall times, the ratio nero-study / bare (target <= 1.2 for one-trial-per-Tune-trial execution),
and seconds of overhead per trial over the trials' own compute. Usage:

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 16] [--budget smoke] [--slots 2]
"""

from __future__ import annotations

import argparse

from _sweeps import Timing, bare_tuner, lr_grid, nero_study_engine, print_table, sequential_compute, start_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--budget", default="smoke", choices=["smoke", "proxy"])
    parser.add_argument("--task", default="digits-mlp")
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()

    from nero_study.study.plan import plan_trials
    from nero_study.study.spec import SweepSpec

    spec_data = {
        "tasks": [args.task],
        "optimizers": ["sgd"],
        "lrs": lr_grid(args.trials - 1, 1e-3, 0.5),  # + sgd's default 0.1 = args.trials
        "budget": args.budget,
        "resources": {"cpu": 1},
    }
    specs = [item.spec for item in plan_trials(SweepSpec.model_validate(spec_data))]
    print(f"{len(specs)} trials of {args.task} at the {args.budget} budget, {args.slots} slots")
    compute_s, _ = sequential_compute(specs)
    start_ray(args.slots)
    rows = [Timing("bare Tune Tuner (reuse_actors)", bare_tuner(specs, args.slots)[0], len(specs))]
    wall, execution, counts, _ = nero_study_engine({**spec_data, "execution": "separate"})
    rows.append(Timing("nero-study, separate", wall, len(specs), f"{execution} {counts}"))
    wall, execution, counts, _ = nero_study_engine({**spec_data, "execution": "packed"})
    rows.append(Timing("nero-study, packed", wall, len(specs), f"{execution} {counts}"))
    print_table(rows, compute_s, args.slots, reference="bare Tune Tuner (reuse_actors)")
    bare, separate = rows[0].wall_s, rows[1].wall_s
    print(f"\nratio nero-study separate / bare Tuner: {separate / bare:.2f} (target <= 1.2)")
    print(f"ratio nero-study packed / bare Tuner:   {rows[2].wall_s / bare:.2f}")


if __name__ == "__main__":
    main()
