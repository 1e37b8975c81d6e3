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


if __name__ == "__main__":  # pragma: no cover
    app()
