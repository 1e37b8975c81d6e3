"""benchmarks/gpu_check.py off a GPU: it stops at its first GPU check without CUDA, and its CPU mode runs
every row tiny through the same code (data generation, the worker's sweep, the table)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    """The script as a module (its sibling ``optim_step`` importable, as when it runs as a script)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def run_script(*args: str, hide_cuda: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if hide_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA device, even on a machine that has one
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
    )


def table_rows(stdout: str) -> dict[str, str]:
    """``case -> line`` of the printed table (the lines under the dashes)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    header = lines[start - 1]
    case_at, measured_at = header.index("case"), header.index("measured")
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows[line[case_at:measured_at].strip()] = line
    return rows


def test_without_cuda_it_stops_at_its_first_gpu_check_with_exit_code_3() -> None:
    result = run_script(hide_cuda=True)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "gpu_check: no CUDA device: torch.cuda.is_available() is False" in result.stderr
    assert "the first GPU check (optimiser step on ResNet-18 shapes) needs one" in result.stderr
    assert result.stdout.splitlines()[-1] == "gpu_check: optim ..."  # nothing after the first check began


def test_the_quick_cpu_rows_print_one_table_with_every_case() -> None:
    result = run_script("--device", "cpu", "--quick", "--rows", "optim,batched,cifar")

    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    for case in ("nero (per-tensor loop)", "nero (foreach)", "adam (fused)", "adam (foreach)"):
        assert re.search(r"\d+\.\d{3} ms", rows[case]), rows[case]
    assert re.search(r"nero-foreach / adam-fused\s+\d+\.\d\d\s+\(target <= 1.0\)", result.stdout)
    assert re.search(r"transformer-350M \(quick: \d+\.\d\d M\)\s+nero \(foreach\).*292 tensors", result.stdout)
    assert re.search(r"\d+\.\d\dx one trial \(target <= 2: (ok|MISSED)\)", rows["8 lrs batched"])
    assert "succeeded" in rows["one trial (lr 0.01931)"] and "on cpu" in rows["8 lrs batched"]
    epoch = rows["1 epoch = 3 steps of 128 on 320 images"]
    assert "ms/step" in epoch and "test error" in epoch and "on cpu" in epoch


@pytest.mark.slow
def test_the_quick_cpu_worker_row_runs_four_fractional_gpu_trials_through_the_worker() -> None:
    result = run_script("--device", "cpu", "--quick", "--rows", "worker")

    assert result.returncode == 0, result.stdout + result.stderr
    row = table_rows(result.stdout)["4 trials on 1 GPU(s) in Ray"]
    assert re.search(r"[1-4] at once\s+\(target 4: (ok|MISSED)\)", row), row
    assert "sweep succeeded" in row and "on cpu" in row


def test_arguments_are_checked_with_the_valid_rows_named(gpu_check: ModuleType, capsys) -> None:  # noqa: ANN001
    assert gpu_check.parse_args(["--rows", "cifar, optim"]).rows == ["cifar", "optim"]
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(["--rows", "optim,gpus"])
    assert exit_info.value.code == 2
    assert "invalid --rows gpus; valid: optim, batched, cifar, worker" in capsys.readouterr().err


def test_the_transformer_has_gpt2_mediums_354_8_million_parameters(gpu_check: ModuleType) -> None:
    import math

    shapes = gpu_check.transformer_shapes()
    assert len(shapes) == 2 + 24 * 12 + 2
    assert sum(math.prod(shape) for shape in shapes) == 354_823_168  # GPT-2 medium's published count


def test_concurrency_is_the_most_trials_open_at_one_instant(gpu_check: ModuleType) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    assert gpu_check.most_at_once([(at(0), at(10)), (at(1), at(9)), (at(2), at(8)), (at(3), at(7))]) == 4
    assert gpu_check.most_at_once([(at(0), at(1)), (at(1), at(2)), (at(2), at(3))]) == 1  # back to back
    assert gpu_check.most_at_once([(at(0), at(5)), (at(1), at(2)), (at(3), at(6))]) == 2
