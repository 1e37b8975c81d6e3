"""How much stacking members can gain on this CPU: measured speed-up and its upper bound, side by side in one run.

``execution: batched`` trains K trials of a task as one stacked model (``nero_study.study.batched``). Stacking
saves what a step costs once per run, not per member: Python, autograd bookkeeping, kernel launches. It cannot
save the arithmetic and memory traffic of the members' own matrix products, convolutions and pooling, which grow
with K. So if a share ``s`` of a trial's time is in those kernels, no stacked run of K members is faster than
``1 / (s + (1 - s) / K)`` times the K trials one by one (Amdahl's law), however well the rest is fused away.

Per task and optimiser, in one thread (a slot's share of a warm service on this machine), this prints:

* one by one: K trials of the proxy budget run one after the other with ``run_trial`` (what ``separate`` and
  ``packed`` runners do per slot);
* stacked: the same K trials as one stacked run (``run_batched_group``, what a ``batched`` slot does), and
  its speed-up over one by one;
* kernel share ``s``: the share of one trial's CPU time (torch profiler, self time) spent in convolution,
  matrix-product and pooling kernels, forward and backward; and the bound above at this K.

The profiler's own cost per operator falls on the small operators, so ``s`` reads low and the bound high: the
bound is generous. The issue's target for batched execution is 1.5x separate on a warm service on CPU.

    .venv/bin/python benchmarks/stacking_ceiling.py [--members 8] [--pairs digits-mlp:nero digits-vgg:nero ...]

Measured 2026-12-03 on this 2-core machine (AMD EPYC), nothing else running, ``--members 8``:

    task / optimiser        one by one s  stacked s  stacked x  kernel share   bound
    digits-mlp / nero               5.17       5.48      0.94x          31%   2.53x
    digits-mlp / sgd                4.73       3.71      1.27x          46%   1.89x
    digits-vgg / nero              27.86      34.60      0.81x          86%   1.14x
    digits-vgg / sgd               34.77      32.91      1.06x          88%   1.12x

digits-vgg spends 86-88% of a trial in convolutions and pooling, so no stacking reaches 1.5x for it on this CPU
(at most 1.14x). digits-mlp could in principle (its one-by-one Nero trials use the fused CPU step; the stacked
members use the batched foreach form), but measured stacking gains 0.94-1.27x.
"""

from __future__ import annotations

import argparse
import time

import torch

# Kernels whose work grows with the number of stacked members (forward and backward).
MEMBER_KERNELS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::_slow_conv2d_forward",
        "aten::_slow_conv2d_backward",
        "aten::max_pool2d_with_indices",
        "aten::max_pool2d_with_indices_backward",
        "aten::avg_pool2d",
        "aten::avg_pool2d_backward",
    }
)


def kernel_share(spec) -> float:
    """The share of one trial's self CPU time in :data:`MEMBER_KERNELS`."""
    from torch.profiler import ProfilerActivity, profile

    from nero_study.tasks.runner import run_trial

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_trial(spec)
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    return sum(event.self_cpu_time_total for event in events if event.key in MEMBER_KERNELS) / total


def measure(task: str, optimizer: str, members: int) -> dict[str, float]:
    from nero_study.study.batched import run_batched_group
    from nero_study.tasks.base import TrialSpec
    from nero_study.tasks.runner import run_trial

    # An lr grid across the paper's range, as a sweep would submit it: 1e-4 .. 1 in log steps.
    lrs = [10 ** (-4 + 4 * i / max(1, members - 1)) for i in range(members)]
    specs = [TrialSpec(task=task, optimizer=optimizer, lr=lr) for lr in lrs]
    run_trial(TrialSpec(task=task, optimizer=optimizer, lr=0.01, budget="smoke"))  # imports, data, first kernels

    start = time.perf_counter()
    for spec in specs:
        run_trial(spec)
    one_by_one = time.perf_counter() - start

    start = time.perf_counter()
    run_batched_group(list(enumerate(specs)), lambda event: None)
    stacked = time.perf_counter() - start

    share = kernel_share(specs[len(specs) // 2])
    return {
        "one_by_one": one_by_one,
        "stacked": stacked,
        "speedup": one_by_one / stacked,
        "share": share,
        "bound": 1.0 / (share + (1.0 - share) / members),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8, help="K: trials per stacked run (16 lrs over 2 slots)")
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=["digits-mlp:nero", "digits-mlp:sgd", "digits-vgg:nero", "digits-vgg:sgd"],
        help="task:optimizer pairs",
    )
    args = parser.parse_args()
    if args.members < 2:
        parser.error(f"--members must be at least 2 (a stacked run has two or more members), got {args.members}")
    pairs = []
    for pair in args.pairs:
        task, sep, optimizer = pair.partition(":")
        if not sep or not task or not optimizer:
            parser.error(f"--pairs takes task:optimizer, e.g. digits-mlp:nero; got {pair!r}")
        pairs.append((task, optimizer))

    torch.set_num_threads(1)
    print(f"K = {args.members} members, 1 thread, proxy budget")
    print(
        f"{'task / optimiser':22} {'one by one s':>13} {'stacked s':>10} {'stacked x':>10} {'kernel share':>13} "
        f"{'bound':>7}"
    )
    for task, optimizer in pairs:
        row = measure(task, optimizer, args.members)
        print(
            f"{task + ' / ' + optimizer:22} {row['one_by_one']:13.2f} {row['stacked']:10.2f} {row['speedup']:9.2f}x "
            f"{row['share']:12.0%} {row['bound']:6.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
