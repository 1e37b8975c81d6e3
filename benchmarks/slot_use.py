"""Slot use of a paper-protocol sweep on warm runners: the old schedule and the new one, side by side in one run.

Slot use (slot utilisation) = busy slot-seconds / available slot-seconds: a slot is busy while it runs one of
the sweep's bundles (timed by the runners' dispatcher), and the sweep has ``slots x`` the time its trials ran.
It is what a sweep's page and ``nero-study status`` show, read here from the store after each run.

* ``fifo``: bundles in plan order, each task's seed repeats after the whole seed-0 grid of every task (the
  schedule before slot use was measured).
* ``longest-first``: bundles by expected length (members x their task's mean trial time in the store), and
  each task's seed repeats join the queue as soon as that task's grid has ended.

Both run the same sweep on the same warm runners and one SQLite store, alternating (``--repeats``). The store is
shared, as a service's is: ``longest-first`` orders by the trial times of the runs before it (``fifo``'s first
run included); its first grid, with nothing measured yet, would be ordered by bundle size alone.

    .venv/bin/python benchmarks/slot_use.py [--tasks digits-mlp digits-vgg text-lm] [--budget proxy] [--repeats 1]

The issue's sweep is the seven proxies (``--tasks digits-mlp digits-vgg digits-resnet digits-gan text-lm
seq2seq ppo-cartpole``) with four optimisers and five lrs: 140 grid trials and 56 repeats, about an hour per run
on two cores.

Measured (2026-12-02, this 2-core machine, one repeat each, slot use fifo -> longest-first, wall fifo /
longest-first): the defaults (3 proxies x 4 optimisers, 84 trials) 97.1% -> 99.6%, 779.6 / 731.9 s = 1.07x; the
seven proxies x nero, sgd at the proxy budget (98 trials) 99.7% -> 99.9%, 992.9 / 951.1 s = 1.04x; the seven
proxies x 4 optimisers at the smoke budget (196 trials) 98.3% -> 98.4%, 35.3 / 32.3 s = 1.09x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _sweeps import start_ray

PAPER_OPTIMIZERS = ["nero", "sgd", "adam", "lamb"]


def run_once(factory, spec, pool, schedule: str) -> tuple[float, float, float, int]:
    """One sweep through the engine on ``pool``; returns wall s, busy and available slot-seconds, trials."""
    from nero_study.store import repo
    from nero_study.study.engine import SweepEngine
    from nero_study.study.queue import queue_sweep

    with factory() as session:
        sweep, _ = queue_sweep(session, spec, name=f"slot-use {schedule}")
        repo.claim_sweep(session, sweep_id=sweep.id, owner="bench", lease_seconds=3600)
    start = time.perf_counter()
    outcome = SweepEngine(session_factory=factory, sweep_id=sweep.id, spec=spec, pool=pool, schedule=schedule).run()
    wall = time.perf_counter() - start
    with factory() as session:  # stored as a worker stores it; read back as the page and the API read it
        repo.finish_sweep(
            session, sweep_id=sweep.id, owner="bench", status="succeeded", execution=outcome.execution,
            slot_use=outcome.slot_use,
        )
        stored = repo.get_sweep(session, sweep_id=sweep.id)
        return wall, stored.busy_slot_s, stored.slot_s, sum(outcome.counts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["digits-mlp", "digits-vgg", "text-lm"])
    parser.add_argument("--optimizers", nargs="+", default=PAPER_OPTIMIZERS)
    parser.add_argument("--budget", default="proxy", choices=["smoke", "proxy"])
    parser.add_argument("--execution", default="auto", choices=["auto", "packed", "batched", "separate"])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from nero_study.store import db
    from nero_study.study.cluster import pool_shape
    from nero_study.study.pool import WarmPool
    from nero_study.study.spec import Resources, SweepSpec

    spec = SweepSpec.model_validate(
        {
            "name": "slot-use",
            "tasks": args.tasks,
            "optimizers": args.optimizers,
            "lrs": {"min": 1e-4, "max": 1.0, "points_per_decade": 1},
            "seeds": [0, 1, 2],
            "protocol": "paper",
            "budget": args.budget,
            "execution": args.execution,
            "resources": {"cpu": 1},
            "max_concurrency": args.slots,
        }
    )
    url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-slot-use-')}/bench.db"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    print(f"paper protocol: {', '.join(args.tasks)} x {', '.join(args.optimizers)}, lrs 1e-4..1 by decades, "
          f"seeds 0-2, {args.budget} budget, execution {args.execution}, {args.slots} slots, warm runners")
    start_ray(args.slots)
    pool = WarmPool(pool_shape(Resources(cpu=1), args.slots))
    results: dict[str, list[tuple[float, float, float, int]]] = {"fifo": [], "longest-first": []}
    try:
        if not pool.wait_until_warm(120):
            raise RuntimeError("the warm pool's runners did not all start within 120 s")
        header = f"{'repeat':<8}{'schedule':<15}{'trials':>7}{'wall s':>9}{'busy slot-s':>13}{'slot-s':>9}"
        print(f"{header}{'slot use':>10}")
        for repeat in range(args.repeats):
            for schedule in results:
                row = run_once(factory, spec, pool, schedule)
                results[schedule].append(row)
                wall, busy, available, trials = row
                print(f"{repeat + 1:<8}{schedule:<15}{trials:>7}{wall:>9.1f}{busy:>13.1f}{available:>9.1f}"
                      f"{busy / available:>10.1%}", flush=True)
    finally:
        pool.close()
    use = {
        name: statistics.median(busy / available for _, busy, available, _ in rows) for name, rows in results.items()
    }
    wall = {name: statistics.median(row[0] for row in rows) for name, rows in results.items()}
    print(f"\nmedians over {args.repeats} repeat(s): slot use fifo {use['fifo']:.1%}, longest-first "
          f"{use['longest-first']:.1%} (target >= 90%); wall fifo / longest-first = "
          f"{wall['fifo'] / wall['longest-first']:.2f}x")


if __name__ == "__main__":
    main()
