"""Time one optimiser step on the parameter shapes of a CIFAR ResNet-18, side by side in one run.

Optimisers: Nero fused (the default on CPU: the numba kernels of ``nero_study.optim.fused``), Nero foreach
(``fused=False``), Nero per-tensor loop, Adam(foreach=True), SGD(foreach=True), LAMB (fast path). Each gets its
own copy of the same random parameters and fixed random gradients (no forward/backward is timed). Rounds are
interleaved (one step of each optimiser per round) so that load from other processes hits all of them alike.
Prints the median and minimum time per step (ms) and, from the medians and from the minima of the same run, the
ratios Nero / SGD-foreach (target <= 2.2: Nero must read the gradient for its per-neuron norms and then read
both tensors again for the update, about two SGD steps of memory traffic), Nero / Adam-foreach (target <= 0.4)
and Nero-loop / Nero-foreach (target >= 1.5). ``--only NAME ...`` times a subset.

    .venv/bin/python benchmarks/optim_step.py [--threads N] [--repeats N] [--device cpu|cuda] [--only ...]

Measured on a quiet 2-core AMD EPYC VM (load average 1.2), torch 2.13 CPU, numba 0.68, 40 repeats, each line one
run, ratios from that run's medians (Adam's own step swung between 10 and 23 ms from run to run):

    run           nero fused ms  nero foreach  sgd foreach  adam foreach  fused/sgd  fused/adam  foreach/sgd
    --threads 2   2.78           6.10          1.54         10.30         1.80       0.27        3.95
    --threads 1   2.74           5.92          1.53         10.25         1.79       0.27        3.87
    --threads 2   2.83           6.13          1.58         22.76         1.79       0.12        3.88
    --threads 2   2.75           6.04          1.56         10.38         1.77       0.27        3.88
    --threads 1   2.78           12.86         1.59         21.52         1.74       0.13        8.06

SGD's own step is not stable on this VM either: in other runs of the same command it took 1.0-2.3 ms (the same
11.2 M floats), so only ratios from one run mean anything. The fused step is about 1.8 SGD steps against
the foreach path's 3.9.

What the fused step does: each neuron is finished while it is in cache (its gradient's squared norm; the
update, summing the new row and its squares; one more pass that centres and normalises), all weight matrices
in one parallel launch and all 1-D tensors in one serial launch, with the addresses of weights and state kept
between steps. Before it, the foreach path's six full passes over each weight tensor and its dozen foreach
calls bounded Nero at about 4 SGD steps. Earlier attempts, kept for the record (single thread, all weight
tensors, a loaded machine): ``torch.var_mean`` over rows took 79 ms, layer norm 19 ms,
``torch.addcmul(shift, rows, scale, out=rows)`` 10 ms; ``torch.compile`` of the per-tensor step
(``fullgraph=True, dynamic=True``) compiled for 90 s, then ran slower than eager, and with static shapes hit
dynamo's recompilation limit. None is used.
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
    parser.add_argument("--only", nargs="*", help="time only these optimisers (names as printed)")
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
        "nero (fused)": lambda params: Nero(params, lr=0.01, fused=True),
        "nero (foreach)": lambda params: Nero(params, lr=0.01, foreach=True, fused=False),
        "nero (per-tensor loop)": lambda params: Nero(params, lr=0.01, foreach=False),
        "adam (foreach)": lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True),
        "sgd (foreach)": lambda params: torch.optim.SGD(params, lr=0.1, foreach=True),
        "lamb (fast path)": lambda params: Lamb(params, lr=0.01, foreach=True),
    }
    if args.device != "cpu":
        del builders["nero (fused)"]  # the kernel is for CPU tensors
    chosen = args.only or list(builders)
    optimizers = {name: builders[name](fresh_params()) for name in chosen}
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
        parts = []
        for nero in ("nero (fused)", "nero (foreach)"):
            if nero not in figures:
                continue
            if "sgd (foreach)" in figures:
                parts.append(f"{nero} / sgd = {figures[nero] / figures['sgd (foreach)']:.2f} (target <= 2.2)")
            if "adam (foreach)" in figures:
                parts.append(f"{nero} / adam = {figures[nero] / figures['adam (foreach)']:.2f} (target <= 0.4)")
        if "nero (per-tensor loop)" in figures and "nero (foreach)" in figures:
            ratio = figures["nero (per-tensor loop)"] / figures["nero (foreach)"]
            parts.append(f"nero loop / foreach = {ratio:.2f} (target >= 1.5)")
        print(f"[{label:>6}] " + "   ".join(parts))


if __name__ == "__main__":
    main()
