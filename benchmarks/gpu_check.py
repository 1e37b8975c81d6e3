"""The prepared GPU check: one command, one table, under 8 minutes on one GPU.

Rows (each with the peak GPU memory it took, reset per row, and its own wall time):

1. optimiser step on the parameter shapes of the CIFAR ResNet-18 (62 tensors, 11.2 M) and of a 350 M
   transformer (GPT-2 medium's: d 1024, 24 layers, vocabulary 50,257, context 1,024; 292 tensors, 354.8 M):
   Nero's per-tensor loop and its foreach fast path against torch's fused Adam (and foreach Adam). Nero has
   no fused kernel: foreach is its fastest path. Random parameters and fixed random gradients; median ms
   per step after warm-up steps. Ratio: nero-foreach / adam-fused.
2. an 8-lr batched digits sweep (digits-mlp, proxy budget, Nero, lrs 1e-3..1, one stacked model through
   ``nero_study.study.execute.run_bundle``, execution ``batched``) against one trial of the same run (``run_trial``):
   target batched / one trial <= 2.
3. one epoch of cifar10-resnet18 at the paper settings (width 64, batch 128, the paper's augmentation and
   schedule; ``max_steps`` = one epoch's 391 steps) on generated data in CIFAR-10's python-pickle format
   (50,000 + 10,000 random images written to a temporary folder).
4. a 4-trial sweep (cifar10-resnet18 at the paper settings on the first 5,000 generated images, cut at 400
   steps, Nero at 4 lrs) with ``resources: {gpu: 0.25}``, run by the queue worker exactly as
   ``nero-study worker`` runs it (a temporary SQLite store, the sweep queued, ``SweepWorker.run_forever``):
   the most trials running at once, from the trials' stored start and finish times (target 4), and the
   device they ran on. Its memory is the device-wide peak (the trials run in Ray worker processes),
   sampled with ``torch.cuda.mem_get_info`` over the baseline before the row.

    .venv/bin/python benchmarks/gpu_check.py                        # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick   # every row tiny, on the CPU

Without a CUDA device (and ``--device cuda``, the default) it stops at its first GPU check with a
"no CUDA device" message and exit code 3. Exit code 1: a row failed (its error is in the table); 0 otherwise
(targets missed are marked in the table, not in the exit code).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local Ray of this process only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import numpy as np  # noqa: E402 - after the environment Ray reads
import torch  # noqa: E402
from optim_step import resnet18_cifar_shapes  # noqa: E402 - benchmarks/ is on the path of its scripts

NO_CUDA_EXIT_CODE = 3
ROW_FAILED_EXIT_CODE = 1
ROWS = ("optim", "batched", "cifar", "worker")
BATCHED_TARGET = 2.0
SHARED_TRIALS = 4
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000


@dataclasses.dataclass
class Row:
    """One line of the table: ``measured`` and ``versus`` (a ratio against its target) are text."""

    check: str
    case: str
    measured: str
    versus: str = ""
    peak_mib: float | None = None
    row_s: float | None = None
    note: str = ""


class NoCudaDevice(RuntimeError):
    """The check needs CUDA and this machine has none."""


def require_device(device: torch.device, check: str) -> None:
    """Stop before ``check`` when it would run on CUDA and there is no CUDA device."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NoCudaDevice(
            f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); the first GPU check ({check}) needs one. "
            "`--device cpu --quick` runs every row tiny on the CPU."
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a row's peak-memory count (CUDA only)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """This process's peak allocated GPU memory since :func:`reset_peak`, in MiB (None on the CPU)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


class DeviceMemorySampler(threading.Thread):
    """The device-wide peak of used GPU memory (all processes) over a baseline, sampled every ``interval`` s."""

    def __init__(self, device: torch.device, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.device, self.interval = device, interval
        self.stop_event = threading.Event()
        self.baseline = self._used()
        self.peak = self.baseline

    def _used(self) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.peak = max(self.peak, self._used())

    def stop(self) -> float:
        """Stop sampling; the peak over the baseline in MiB."""
        self.stop_event.set()
        self.join()
        return (self.peak - self.baseline) / 2**20


# --- parameter shapes --------------------------------------------------------------------------------------


def transformer_shapes(
    d_model: int = 1024, layers: int = 24, vocab: int = 50_257, context: int = 1_024
) -> list[tuple[int, ...]]:
    """A GPT-2-style decoder's parameter shapes (``nn.Linear`` layout ``(out, in)``); the defaults are
    GPT-2 medium's: 292 tensors, 354.8 M parameters. Per layer: two LayerNorms, the fused QKV projection
    (3d x d), the output projection (d x d) and the MLP (4d x d, d x 4d), each with a bias."""
    d = d_model
    shapes: list[tuple[int, ...]] = [(vocab, d), (context, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,)]
        shapes += [(d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return shapes + [(d,), (d,)]


def narrowed(shapes: list[tuple[int, ...]], factor: int) -> list[tuple[int, ...]]:
    """``shapes`` with their first two axes (out and in features or channels) divided by ``factor``."""
    return [tuple(max(1, size // factor) if axis < 2 else size for axis, size in enumerate(shape)) for shape in shapes]


# --- row 1: one optimiser step -----------------------------------------------------------------------------


def optimizer_builders() -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    from nero_study.optim.nero import Nero

    return {
        "nero (per-tensor loop)": lambda params: Nero(params, lr=0.01, foreach=False),
        "nero (foreach)": lambda params: Nero(params, lr=0.01, foreach=True),
        "adam (fused)": lambda params: torch.optim.Adam(params, lr=1e-3, fused=True),
        "adam (foreach)": lambda params: torch.optim.Adam(params, lr=1e-3, foreach=True),
    }


def time_steps(
    shapes: list[tuple[int, ...]],
    build: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
) -> tuple[float, float | None]:
    """Median ms of one ``step()`` on fresh random float32 parameters with fixed random gradients, and the
    peak GPU memory (MiB) of parameters, gradients, state and step together."""
    reset_peak(device)
    generator = torch.Generator(device=device).manual_seed(0)
    params = []
    for shape in shapes:
        param = (torch.randn(shape, generator=generator, device=device) * 0.05).requires_grad_()
        param.grad = torch.randn(shape, generator=generator, device=device) * 1e-3
        params.append(param)
    optimizer = build(params)
    for _ in range(warmup):
        optimizer.step()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        optimizer.step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    peak = peak_mib(device)
    del optimizer, params
    return statistics.median(times), peak


def optimizer_rows(device: torch.device, quick: bool) -> Iterable[Row]:
    require_device(device, "optimiser step on ResNet-18 shapes")
    shape_sets = {"resnet-18": resnet18_cifar_shapes(), "transformer-350M": transformer_shapes()}
    if quick:  # the same layers, a 16th of the widths
        shape_sets = {label: narrowed(shapes, 16) for label, shapes in shape_sets.items()}
    warmup, repeats = (1, 3) if quick else (5, 30)
    for label, shapes in shape_sets.items():
        numel = sum(math.prod(shape) for shape in shapes)
        label = f"{label} ({'quick: ' if quick else ''}{numel / 1e6:.2f} M)"
        medians: dict[str, float] = {}
        for name, build in optimizer_builders().items():
            start = time.perf_counter()
            medians[name], peak = time_steps(shapes, build, device, warmup=warmup, repeats=repeats)
            note = f"{len(shapes)} tensors, median of {repeats}"
            yield Row(
                f"optim step, {label}", name, f"{medians[name]:.3f} ms", "", peak, time.perf_counter() - start, note
            )
        ratio = medians["nero (foreach)"] / medians["adam (fused)"]
        yield Row(f"optim step, {label}", "nero-foreach / adam-fused", f"{ratio:.2f}", "(target <= 1.0)")


# --- row 2: batched lrs against one trial -------------------------------------------------------------------


def lr_grid(points: int = 8, low: float = 1e-3, high: float = 1.0) -> list[float]:
    return [float(f"{low * (high / low) ** (i / (points - 1)):.4g}") for i in range(points)]


def batched_rows(device: torch.device, quick: bool) -> Iterable[Row]:
    require_device(device, "batched digits sweep")
    from nero_study.study.batched import batched_support
    from nero_study.study.execute import run_bundle
    from nero_study.study.protocol import TrialFinished
    from nero_study.tasks.base import TrialSpec
    from nero_study.tasks.runner import run_trial

    budget = "smoke" if quick else "proxy"
    specs = [
        TrialSpec(task="digits-mlp", optimizer="nero", lr=lr, budget=budget, device=device.type) for lr in lr_grid()
    ]
    reasons = {batched_support(spec) for spec in specs}
    if reasons != {None}:
        raise RuntimeError(f"digits-mlp with Nero does not run batched: {reasons}")
    # Warm-up: the CUDA context, library handles and first calls are paid here, by neither timed run.
    warm = dataclasses.replace(specs[0], budget="smoke")
    run_trial(warm)
    run_bundle([warm, dataclasses.replace(warm, lr=0.1)], lambda event: None, execution="batched")

    reset_peak(device)
    start = time.perf_counter()
    one = run_trial(specs[3])
    synchronize(device)
    one_s = time.perf_counter() - start
    one_peak = peak_mib(device)

    reset_peak(device)
    events: list = []
    start = time.perf_counter()
    run_bundle(specs, events.append, execution="batched")
    synchronize(device)
    batched_s = time.perf_counter() - start
    done = [event for event in events if isinstance(event, TrialFinished)]
    statuses = sorted({event.status for event in done})
    devices = sorted({event.device for event in done})
    if len(done) != len(specs) or not set(statuses) <= {"succeeded", "diverged"}:
        raise RuntimeError(f"batched run finished {len(done)} of {len(specs)} members: {statuses}")
    check = f"digits-mlp {budget}, nero"
    yield Row(
        check,
        f"one trial (lr {specs[3].lr:g})",
        f"{one_s:.2f} s",
        "",
        one_peak,
        one_s,
        f"{one.steps} steps, {one.status}, on {one.device}",
    )
    ratio = batched_s / one_s
    verdict = "ok" if ratio <= BATCHED_TARGET else "MISSED"
    yield Row(
        check,
        f"{len(specs)} lrs batched",
        f"{batched_s:.2f} s",
        f"{ratio:.2f}x one trial (target <= {BATCHED_TARGET:g}: {verdict})",
        peak_mib(device),
        batched_s,
        f"lrs {specs[0].lr:g}..{specs[-1].lr:g}: {', '.join(statuses)}, on {', '.join(devices)}",
    )


# --- row 3: one epoch of cifar10-resnet18 at the paper settings ------------------------------------------------


def write_cifar10(root: Path, train_images: int, test_images: int, seed: int = 0) -> None:
    """Random images in CIFAR-10's python-pickle layout: five training batches and the test batch."""
    from nero_study.data.cifar10 import CIFAR10_SUBDIR, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, write_cifar_batch

    folder = root / CIFAR10_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = train_images // len(CIFAR10_TRAIN_FILES)
    for name, count in [(name, per_batch) for name in CIFAR10_TRAIN_FILES] + [(CIFAR10_TEST_FILE, test_images)]:
        images = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        write_cifar_batch(folder / name, images, rng.integers(0, 10, size=count).tolist(), name)


def cifar_epoch_row(device: torch.device, quick: bool, data: Callable[[], int]) -> Iterable[Row]:
    require_device(device, "cifar10-resnet18 epoch")
    train_images = data()
    from nero_study.data.cifar10 import steps_per_epoch_keep_last
    from nero_study.tasks.base import TrialSpec
    from nero_study.tasks.runner import run_trial

    epoch_steps = steps_per_epoch_keep_last(train_images, 128)
    options: dict = {"max_steps": epoch_steps}
    if quick:
        options["width"] = 8
    spec = TrialSpec(
        task="cifar10-resnet18", optimizer="nero", lr=0.01, budget="paper", task_options=options, device=device.type
    )
    reset_peak(device)
    start = time.perf_counter()
    result = run_trial(spec)
    synchronize(device)
    wall = time.perf_counter() - start
    if result.status != "succeeded" or result.steps != epoch_steps:
        raise RuntimeError(f"cifar10-resnet18 epoch: {result.status} after {result.steps} steps: {result.error}")
    note = f"incl. loading and {len(result.curve)} test evaluations; test error {result.metric:.3f}, on {result.device}"
    yield Row(
        "cifar10-resnet18 paper settings" + (" (quick: width 8)" if quick else ""),
        f"1 epoch = {epoch_steps} steps of 128 on {train_images} images",
        f"{wall:.1f} s",
        f"{wall / epoch_steps * 1e3:.1f} ms/step, {train_images / wall:.0f} img/s",
        peak_mib(device),
        wall,
        note,
    )


# --- row 4: four trials sharing the GPU through the worker ------------------------------------------------------


def most_at_once(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (an end at the moment of a start counts first)."""
    edges = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1])
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def worker_sweep_row(device: torch.device, quick: bool, workdir: Path, data: Callable[[], int]) -> Iterable[Row]:
    require_device(device, "4-trial sweep sharing the GPU")
    data()  # before Ray starts: its worker processes inherit NERO_STUDY_DATA_DIR
    from nero_study.settings import Settings
    from nero_study.store import db, repo
    from nero_study.study.cluster import ensure_ray
    from nero_study.study.queue import queue_sweep
    from nero_study.study.spec import SweepSpec
    from workers.worker import SweepWorker

    # On the CPU, Ray is told of one (logical) GPU so that the same fractional-GPU placement runs.
    ensure_ray(num_cpus=os.cpu_count() or 2, num_gpus=1 if device.type == "cpu" else None)
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    options = {"train_limit": 5000, "test_limit": 2000, "max_steps": 400, "evals_per_epoch": 1}
    if quick:
        options = {"train_limit": 64, "test_limit": 32, "max_steps": 3, "width": 8}
    cpus = min(1.0, (os.cpu_count() or 2) / SHARED_TRIALS)
    spec = SweepSpec.model_validate(
        {
            "name": "gpu-check shared GPU",
            "tasks": ["cifar10-resnet18"],
            "optimizers": ["nero"],
            "lrs": [0.003, 0.01, 0.03, 0.1],
            "budget": "paper",
            "task_options": {"cifar10-resnet18": options},
            "resources": {"cpu": cpus, "gpu": 1 / SHARED_TRIALS},
            "execution": "packed",
        }
    )
    url = f"sqlite:///{workdir / 'gpu-check.db'}"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        sweep_id = queue_sweep(session, spec)[0].id
    sampler = DeviceMemorySampler(device) if device.type == "cuda" else None
    if sampler is not None:
        sampler.start()
    worker = SweepWorker(Settings(database_url=url, poll_seconds=0.2, seed_demo=False), owner="gpu-check")
    start = time.perf_counter()
    ran = worker.run_forever(once=True)
    wall = time.perf_counter() - start
    peak = sampler.stop() if sampler is not None else None
    with factory() as session:
        sweep = repo.get_sweep(session, sweep_id=sweep_id)
        trials, _ = repo.list_trials(session, sweep_id=sweep_id, limit=100)
        rows = [(t.status, t.device, t.started_at, t.finished_at, t.wall_s) for t in trials]
        sweep_status = sweep.status if sweep is not None else "missing"
    timed = [(started, finished) for _, _, started, finished, _ in rows if started and finished]
    at_once = most_at_once(timed)
    statuses = sorted({status for status, *_ in rows})
    devices = sorted({str(device_name) for _, device_name, *_ in rows})
    if ran != 1 or sweep_status != "succeeded" or len(rows) != SHARED_TRIALS:
        raise RuntimeError(f"worker ran {ran} sweep(s): {sweep_status}, {len(rows)} trials {statuses}")
    trial_s = statistics.median(wall_s for *_, wall_s in rows if wall_s is not None)
    verdict = "ok" if at_once == SHARED_TRIALS else "MISSED"
    yield Row(
        f"worker sweep, resources gpu {1 / SHARED_TRIALS:g}",
        f"{SHARED_TRIALS} trials on {gpus:g} GPU(s) in Ray",
        f"{at_once} at once",
        f"(target {SHARED_TRIALS}: {verdict})",
        peak,
        wall,
        f"sweep {sweep_status} in {wall:.1f} s, trial median {trial_s:.1f} s, {', '.join(statuses)}, "
        f"on {', '.join(devices)}; memory device-wide",
    )


# --- the table ---------------------------------------------------------------------------------------------------


def format_table(rows: list[Row]) -> str:
    """The rows as one aligned text table."""
    header = ("check", "case", "measured", "vs target", "peak GPU MiB", "row s", "note")
    cells = [
        (
            row.check,
            row.case,
            row.measured,
            row.versus,
            "-" if row.peak_mib is None else f"{row.peak_mib:,.0f}",
            "" if row.row_s is None else f"{row.row_s:.1f}",
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header) - 1)]
    lines = []
    for line in [header, *cells]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
        if line is header:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 4)
    return "\n".join(line.rstrip() for line in lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where every row runs")
    parser.add_argument("--quick", action="store_true", help="every row tiny (the CPU test uses this)")
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma-separated rows to run, of {', '.join(ROWS)} (default: all)"
    )
    args = parser.parse_args(argv)
    args.rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown or not args.rows:
        parser.error(f"invalid --rows {', '.join(unknown) or '(none)'}; valid: {', '.join(ROWS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    print(
        f"gpu_check: torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}), device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" and torch.cuda.is_available() else "")
        + f", {os.cpu_count()} CPUs, rows {', '.join(args.rows)}{', quick' if args.quick else ''}",
        flush=True,
    )
    # GPU rows need few CPU threads; quick CPU rows are tiny, where more threads only wait for each other.
    torch.set_num_threads(1 if device.type == "cpu" else min(4, os.cpu_count() or 1))
    rows: list[Row] = []
    failed = False
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nero-gpu-check-") as tmp:
        workdir = Path(tmp)
        train_images, test_images = (320, 64) if args.quick else (CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES)

        def cifar_data() -> int:
            """Generated CIFAR-10 under the data directory the tasks read (written once); its training size."""
            if os.environ.get("NERO_STUDY_DATA_DIR") != str(workdir / "data"):
                write_cifar10(workdir / "data", train_images, test_images)
                os.environ["NERO_STUDY_DATA_DIR"] = str(workdir / "data")
            return train_images

        checks: dict[str, Callable[[], Iterable[Row]]] = {
            "optim": lambda: optimizer_rows(device, args.quick),
            "batched": lambda: batched_rows(device, args.quick),
            "cifar": lambda: cifar_epoch_row(device, args.quick, cifar_data),
            "worker": lambda: worker_sweep_row(device, args.quick, workdir, cifar_data),
        }
        for name in args.rows:
            print(f"gpu_check: {name} ...", flush=True)
            try:
                rows.extend(checks[name]())
            except NoCudaDevice as exc:
                print(f"gpu_check: {exc}", file=sys.stderr, flush=True)
                return NO_CUDA_EXIT_CODE
            except Exception as exc:  # noqa: BLE001 - one failed row must not cost the others' device time
                traceback.print_exc()
                rows.append(Row(name, "FAILED", f"{type(exc).__name__}: {exc}"))
                failed = True
        if "worker" in args.rows:
            import ray

            ray.shutdown()
    print()
    print(format_table(rows))
    print(f"\ngpu_check: {time.perf_counter() - start:.0f} s in all")
    return ROW_FAILED_EXIT_CODE if failed else 0


if __name__ == "__main__":
    sys.exit(main())
