"""Time one optimiser step on the parameter shapes of a CIFAR ResNet-18, side by side in one run.

Optimisers: Nero fast path, Nero per-tensor loop, Adam(foreach=True), SGD(foreach=True), LAMB (fast path).
Each gets its own copy of the same random parameters and fixed random gradients (no forward/backward is
timed). Rounds are interleaved (one step of each optimiser per round) so that load from other processes
hits all of them alike. Prints the median and minimum time per step (ms) and, from the medians and from the
minima of the same run, the ratios Nero-fast / SGD-foreach (target <= 2.2: Nero must read the gradient for its
per-neuron norms and then read both tensors again for the update, about two SGD steps of memory traffic),
Nero-fast / Adam-foreach (target <= 0.4) and Nero-loop / Nero-fast (target >= 1.5).

    .venv/bin/python benchmarks/optim_step.py [--threads N] [--repeats N] [--device cpu|cuda]

Measured (2-core AMD EPYC VM shared with other sessions, load average 9-15 throughout, torch 2.13 CPU,
30 repeats, ``.venv/bin/python benchmarks/optim_step.py --threads 1``: one thread, which is not held up
waiting for a preempted second one; each line one run, ratios from that run's medians / minima):

    --threads 1   nero-fast ms (med/min)  sgd-foreach  adam-foreach  nero/sgd (med/min)  nero/adam (med/min)
    run 1         27.31 / 15.54           8.00 / 2.66  65.3 / 26.4   3.41 / 5.84         0.42 / 0.59
    run 2         27.42 / 11.52           6.71 / 2.63  67.6 / 22.7   4.09 / 4.38         0.41 / 0.51
    run 3         26.25 /  9.84           5.57 / 2.78  80.6 / 32.1   4.71 / 3.54         0.33 / 0.31

With ``--threads 2`` (the default on that machine) the same load made the figures meaningless (SGD's
median 15-58 ms against a minimum of 1.5-3.2 ms; Nero/SGD 5.0-8.5 from medians). So Nero's fast path is
about 3.5-5 SGD steps here, not the 2.2 targeted, and about 0.3-0.6 Adam steps. What bounds it: the fast
path makes six full passes over a weight tensor (the gradient's row norms; the fused update; the row mean;
the centring; the row norm; the division), each costing (1.4-1.9 ms single-threaded for all weight tensors
here) half to two thirds of a whole SGD step (2.2-2.8 ms), and no eager torch op tried does two of them in
one (minima over all weight tensors, single thread): ``torch.var_mean`` over rows (mean and norm in one
pass) took 79 ms, layer norm (mean, norm and division in one kernel) 19 ms,
``torch.addcmul(shift, rows, scale, out=rows)`` 10 ms. ``torch.compile`` of the whole per-tensor step
(``fullgraph=True, dynamic=True``) compiled for 90 s, then ran the weight tensors in 28 ms against eager's
15-21 ms (single thread); with static shapes it hit dynamo's recompilation limit (more than 8 distinct
shapes). Neither is used. Processing the weight tensors in cache-sized chunks (gradients re-read from
cache) made no difference measurable under this load and was not kept.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable

import torch

from nero_study.optim.lamb import Lamb
from nero_study.optim.nero import Nero


def resnet18_cifar_shapes(num_classes: int = 10) -> list[tuple[int, ...]]:
    """Parameter shapes of the CIFAR ResNet-18 (3x3 stem, BatchNorm, 1x1 shortcuts): 62 tensors, 11.17 M."""
    shapes: list[tuple[int, ...]] = [(64, 3, 3, 3), (64,), (64,)]
    in_channels = 64
    for out_channels, first_stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            stride = first_stride if block == 0 else 1
            shapes += [(out_channels, in_channels, 3, 3), (out_channels,), (out_channels,)]
            shapes += [(out_channels, out_channels, 3, 3), (out_channels,), (out_channels,)]
            if stride != 1 or in_channels != out_channels:
                shapes += [(out_channels, in_channels, 1, 1), (out_channels,), (out_channels,)]
            in_channels = out_channels
    shapes += [(num_classes, 512), (num_classes,)]
    return shapes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (all cores)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per optimiser")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimiser first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    shapes = resnet18_cifar_shapes()
    initial = [torch.randn(shape, generator=generator) * 0.05 for shape in shapes]
    gradients = [torch.randn(shape, generator=generator) * 1e-3 for shape in shapes]

    def fresh_params() -> list[torch.Tensor]:
        params = [tensor.to(device).requires_grad_() for tensor in initial]
        for param, grad in zip(params, gradients, strict=True):
            param.grad = grad.to(device)
        return params

    builders: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
        "nero (fast path)": lambda params: Nero(params, lr=0.01, foreach=True),
        "nero (per-tensor loop)": lambda params: Nero(params, lr=0.01, foreach=False),
        "adam (foreach)": lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True),
        "sgd (foreach)": lambda params: torch.optim.SGD(params, lr=0.1, foreach=True),
        "lamb (fast path)": lambda params: Lamb(params, lr=0.01, foreach=True),
    }
    optimizers = {name: build(fresh_params()) for name, build in builders.items()}
    for optimizer in optimizers.values():
        for _ in range(args.warmup):
            optimizer.step()
    _sync(device)

    times: dict[str, list[float]] = {name: [] for name in optimizers}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, optimizer in optimizers.items():
            _sync(device)
            start = time.perf_counter()
            optimizer.step()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    load_after = os.getloadavg()[0]

    medians = {name: statistics.median(values) for name, values in times.items()}
    minima = {name: min(values) for name, values in times.items()}
    numel = sum(math.prod(shape) for shape in shapes)
    print(
        f"one optimiser step, CIFAR ResNet-18 shapes ({len(shapes)} tensors, {numel / 1e6:.2f} M params), "
        f"float32, device {device}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{args.repeats} interleaved repeats; load average {load_before:.2f} -> {load_after:.2f}"
    )
    print(f"{'optimiser':<24}{'median ms':>12}{'min ms':>10}")
    for name, values in times.items():
        print(f"{name:<24}{medians[name]:>12.2f}{min(values):>10.2f}")
    # Ratios of the same run's figures: medians, and minima (the least disturbed step of each, which on a
    # shared machine is the better estimate of what the step itself costs).
    for label, figures in (("median", medians), ("min", minima)):
        nero = figures["nero (fast path)"]
        print(
            f"[{label:>6}] nero-fast / sgd-foreach = {nero / figures['sgd (foreach)']:.2f} (target <= 2.2)   "
            f"nero-fast / adam-foreach = {nero / figures['adam (foreach)']:.2f} (target <= 0.4)   "
            f"nero-loop / nero-fast = {figures['nero (per-tensor loop)'] / nero:.2f} (target >= 1.5)"
        )


if __name__ == "__main__":
    main()
