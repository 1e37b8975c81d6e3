"""Sweep throughput: an lr sweep of digits-mlp at the proxy budget, side by side in one run:

(a) a bare Ray Tune Tuner with actor reuse, (b) nero-study packed, (c) nero-study batched, against the
trials run one by one in one process (no Ray). Each Ray path runs at two sizes (n and 3n trials) so that
its wall time splits into a fixed start-up cost (Ray actors, imports, first data load) and a marginal cost
per trial; the overhead per trial is that marginal cost minus the trial's own compute per slot.
Targets on a 2-core machine: (b) <= 0.1 s of overhead per trial; (c) >= 1.5x the throughput of running
the trials one by one in one process. Usage:

    .venv/bin/python benchmarks/sweep_throughput.py [--trials 16] [--budget proxy] [--slots 2] [--optimizer nero]
"""

from __future__ import annotations

import argparse

from _sweeps import bare_tuner, lr_grid, nero_study_engine, sequential_compute, start_ray


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

    def spec_data(n: int) -> dict:
        default = get_optimizer(args.optimizer).default_lr
        grid = [lr for lr in lr_grid(n, 1e-4, 1.0) if lr != default][: n - 1]
        return {"tasks": [args.task], "optimizers": [args.optimizer], "lrs": grid, "budget": args.budget,
                "resources": {"cpu": 1}}

    sizes = (args.trials, 3 * args.trials)
    specs = {n: [item.spec for item in plan_trials(SweepSpec.model_validate(spec_data(n)))] for n in sizes}
    print(f"{args.task} / {args.optimizer}, {args.budget} budget, lrs 1e-4..1, {args.slots} slots, sizes {sizes}")
    compute_s, _ = sequential_compute(specs[sizes[0]])
    per_trial = compute_s / sizes[0]
    print(f"one by one in one process (no Ray): {compute_s:.2f} s for {sizes[0]} trials = {per_trial:.3f} s/trial")
    start_ray(args.slots)

    walls: dict[str, dict[int, float]] = {"(a) bare Tune Tuner": {}, "(b) nero-study packed": {},
                                          "(c) nero-study batched": {}}
    notes: dict[str, str] = {}
    for n in sizes:
        walls["(a) bare Tune Tuner"][n] = bare_tuner(specs[n], args.slots)
        for mode, name in (("packed", "(b) nero-study packed"), ("batched", "(c) nero-study batched")):
            wall, execution, counts = nero_study_engine({**spec_data(n), "execution": mode})
            walls[name][n] = wall
            notes[name] = f"ran as {execution}"

    small, large = sizes
    ideal = {n: n * per_trial / args.slots for n in sizes}
    print(f"\n{'path':<26}{'wall n':>9}{'wall 3n':>9}{'fixed s':>9}{'s/trial':>9}{'overhead s/trial':>18}"
          f"{'x one-by-one (n)':>18}{'x marginal':>12}")
    print(f"{'one by one, one process':<26}{compute_s:>9.2f}{3 * compute_s:>9.2f}{0:>9.2f}{per_trial:>9.3f}"
          f"{'':>18}{1:>18.2f}{1:>12.2f}")
    results = {}
    for name, wall in walls.items():
        marginal = (wall[large] - wall[small]) / (large - small)
        fixed = wall[small] - marginal * small
        overhead = marginal - per_trial / args.slots
        results[name] = (overhead, compute_s / wall[small], per_trial / marginal)
        print(f"{name:<26}{wall[small]:>9.2f}{wall[large]:>9.2f}{fixed:>9.2f}{marginal:>9.3f}{overhead:>18.3f}"
              f"{compute_s / wall[small]:>18.2f}{per_trial / marginal:>12.2f}  {notes.get(name, '')}")
    print(f"\nideal on {args.slots} slots: {ideal[small]:.2f} s / {ideal[large]:.2f} s")
    print(f"(b) packed: overhead per trial {results['(b) nero-study packed'][0]:.3f} s (target <= 0.1)")
    print(f"(c) batched: throughput vs one by one {results['(c) nero-study batched'][1]:.2f}x at n={small} "
          f"(whole run, start-up included), {results['(c) nero-study batched'][2]:.2f}x marginal (target >= 1.5)")
    print(f"(a) bare Tuner overhead per trial {results['(a) bare Tune Tuner'][0]:.3f} s")


if __name__ == "__main__":
    main()
