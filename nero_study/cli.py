"""The ``nero-study`` command line (typer)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="nero-study",
    help="Hyperparameter-robustness studies of optimisers: Nero vs SGD, Adam and LAMB.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def _finite_or_none(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


@app.callback()
def main() -> None:
    """Hyperparameter-robustness studies of optimisers: Nero vs SGD, Adam and LAMB."""


@app.command()
def optimizers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the registered optimisers with their default lr and presets."""
    from nero_study.optim.registry import list_optimizers

    infos = [info.describe() for info in list_optimizers()]
    if as_json:
        typer.echo(json.dumps(infos, default=_json_default, indent=2))
        return
    table = Table(title="Optimisers")
    table.add_column("name")
    table.add_column("default lr", justify="right")
    table.add_column("paper preset")
    table.add_column("library preset")
    table.add_column("settings")
    for info in infos:
        table.add_row(
            info["name"],
            f"{info['default_lr']:g}",
            ", ".join(f"{k}={v}" for k, v in info["presets"]["paper"].items()),
            ", ".join(f"{k}={v}" for k, v in info["presets"]["library"].items()),
            ", ".join(info["hyperparameters"]),
        )
    console.print(table)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the benchmark tasks with their metric and budgets."""
    from nero_study.tasks.registry import list_tasks

    infos = [task.describe() for task in list_tasks()]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    table = Table(title="Tasks")
    for column in ("name", "kind", "metric", "better", "chance", "budgets", "description"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            info["name"],
            info["kind"],
            info["metric_name"],
            "lower" if info["lower_is_better"] else "higher",
            f"{info['chance_metric']:g}",
            ", ".join(info["budgets"]),
            info["description"],
        )
    console.print(table)


@app.command()
def trial(
    task: Annotated[str, typer.Option(help="Task name (see `nero-study tasks`)")],
    optimizer: Annotated[str, typer.Option(help="Optimiser name (see `nero-study optimizers`)")],
    lr: Annotated[float | None, typer.Option(help="Learning rate (> 0); default: the optimiser's default")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    budget: Annotated[str, typer.Option(help="smoke | proxy | paper")] = "proxy",
    preset: Annotated[str, typer.Option(help="paper | library")] = "paper",
    setting: Annotated[
        list[str] | None, typer.Option("--set", help="Optimiser setting NAME=VALUE (JSON value), repeatable")
    ] = None,
    option: Annotated[list[str] | None, typer.Option(help="Task option NAME=VALUE (JSON value), repeatable")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | auto (default: the task's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the result")] = False,
) -> None:
    """Run one trial and print its result (a learning curve, final metric, status)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from nero_study.optim.registry import get_optimizer
    from nero_study.tasks.base import BUDGETS, EvalPoint, TrialSpec, run_trial
    from nero_study.tasks.registry import get_task

    try:
        task_obj = get_task(task)
        info = get_optimizer(optimizer)
        if budget not in BUDGETS:
            raise ValueError(f"Invalid budget {budget!r}; valid: {', '.join(BUDGETS)}")
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"Invalid lr: {lr}; the learning rate must be a positive finite number")
        spec = TrialSpec(
            task=task,
            optimizer=optimizer,
            lr=info.default_lr if lr is None else lr,
            seed=seed,
            budget=budget,
            preset=preset,
            hyperparameters=_parse_pairs(setting, "--set"),
            task_options=_parse_pairs(option, "--option"),
            device=device,
        )
    except ValueError as exc:
        _fail(str(exc))

    progress = Progress(
        TextColumn(f"[bold]{task}[/] {optimizer} lr={spec.lr:g} seed={seed}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not err_console.is_terminal,
    )
    progress_task = progress.add_task("trial", total=None, status="starting")

    def report(point: EvalPoint) -> None:
        progress.update(
            progress_task,
            status=f"step {point.step}  loss {point.train_loss:.4g}  {task_obj.metric_name} {point.metric:.4g}",
        )

    try:
        with progress:
            result = run_trial(spec, reporter=report)
    except ValueError as exc:
        _fail(str(exc))

    if as_json:
        payload = result.to_dict()
        typer.echo(json.dumps(payload, default=_json_default, allow_nan=True))
        return
    table = Table(title=f"{task} / {optimizer} / lr {spec.lr:g} / seed {seed}")
    table.add_column("step", justify="right")
    table.add_column("epoch", justify="right")
    table.add_column("train loss", justify="right")
    table.add_column(task_obj.metric_name, justify="right")
    for point in result.curve:
        table.add_row(str(point.step), f"{point.epoch:.2f}", f"{point.train_loss:.4g}", f"{point.metric:.4g}")
    console.print(table)
    console.print(
        f"status [bold]{result.status}[/]  {result.metric_name} {result.metric:.4g} "
        f"(best {result.best_metric:.4g}, at init {result.initial_metric:.4g})  "
        f"{result.wall_s:.1f} s on {result.device}"
    )
    if result.error:
        console.print(f"[yellow]{result.error}[/]")
    if result.status == "failed":
        raise typer.Exit(1)


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"Invalid {flag} {pair!r}; expected NAME=VALUE")
        name, raw = pair.split("=", 1)
        try:
            parsed[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[name.strip()] = raw
    return parsed


if __name__ == "__main__":  # pragma: no cover
    app()
