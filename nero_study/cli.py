"""The ``nero-study`` command line (typer)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nero_study.formatting import format_number
from nero_study.json_safe import dumps

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


@app.callback()
def main() -> None:
    """Hyperparameter-robustness studies of optimisers: Nero vs SGD, Adam and LAMB."""


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in settings.items())


def _overrides_text(per_network: dict[str, dict[str, Any]], label: str = "") -> str:
    """``label: settings`` per network; the network is named only for tasks that train several."""
    parts = []
    for network, settings in per_network.items():
        name = label if network == "model" else f"{label}/{network}".lstrip("/")
        parts.append(f"{name}: {_settings_text(settings)}" if name else _settings_text(settings))
    return "; ".join(parts)


@app.command()
def optimizers(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the registered optimisers: default lr (and where it comes from), presets, settings, and the tasks
    whose paper configuration gives the optimiser other settings than the paper preset."""
    from nero_study.optim.registry import list_optimizers
    from nero_study.tasks.registry import optimizer_task_overrides

    infos = [{**info.describe(), "task_overrides": optimizer_task_overrides(info.name)} for info in list_optimizers()]
    if as_json:
        typer.echo(dumps(infos, indent=2))
        return
    table = Table(title="Optimisers (a trial uses: preset, then the task's paper overrides, then its own settings)")
    table.add_column("name")
    table.add_column("default lr", justify="right")
    table.add_column("default lr from")
    table.add_column("paper preset")
    table.add_column("library preset")
    table.add_column("paper preset, per task")
    table.add_column("settings")
    for info in infos:
        table.add_row(
            info["name"],
            f"{info['default_lr']:g}",
            info["default_lr_source"],
            _settings_text(info["presets"]["paper"]),
            _settings_text(info["presets"]["library"]),
            "; ".join(_overrides_text(per_network, task) for task, per_network in info["task_overrides"].items()),
            ", ".join(info["hyperparameters"]),
        )
    console.print(table)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the benchmark tasks: metric, budgets, the optimiser settings their paper configuration overrides,
    and caveats. ``--json`` adds, per preset and optimiser, the full settings a trial uses."""
    from nero_study.tasks.registry import list_tasks

    infos = [task.describe() for task in list_tasks()]
    if as_json:
        typer.echo(dumps(infos, indent=2))
        return
    table = Table(title="Tasks")
    for column in ("name", "kind", "metric", "better", "chance", "budgets", "paper overrides", "description"):
        table.add_column(column)
    for info in infos:
        metric = info["metric_name"]
        if info["curve_metric_name"] != metric:
            metric += f" (curve: {info['curve_metric_name']})"
        overrides = {}
        for network, per_optimizer in info["paper_overrides"].items():
            for optimizer, settings in per_optimizer.items():
                overrides.setdefault(optimizer, {})[network] = settings
        description = info["description"]
        if info["caveat"]:
            description += f"\n[yellow]caveat:[/] {info['caveat']}"
        table.add_row(
            info["name"],
            info["kind"],
            metric,
            "lower" if info["lower_is_better"] else "higher",
            f"{info['chance_metric']:g}",
            ", ".join(info["budgets"]),
            "; ".join(_overrides_text(per_network, optimizer) for optimizer, per_network in overrides.items()),
            description,
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
    threads: Annotated[int, typer.Option(help="CPU threads for torch (proxy budgets are sized for one)")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the result")] = False,
) -> None:
    """Run one trial and print its result (a learning curve, final metric, status)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from nero_study.optim.registry import get_optimizer
    from nero_study.tasks.base import EvalPoint, TrialSpec
    from nero_study.tasks.registry import get_task
    from nero_study.tasks.runner import run_trial
    from nero_study.vocabulary import BUDGETS

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

    import torch

    torch.set_num_threads(max(1, threads))
    try:
        with progress:
            result = run_trial(spec, reporter=report)
    except ValueError as exc:
        _fail(str(exc))

    if as_json:
        typer.echo(dumps(result.to_dict()))
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


def _settings(db_url: str | None = None) -> Any:
    from nero_study.settings import Settings

    settings = Settings()
    if db_url:
        settings = settings.model_copy(update={"database_url": db_url})
    return settings


def _load_spec(path: str, settings: Any) -> Any:
    from pydantic import ValidationError

    from nero_study.study.spec import SweepSpec

    try:
        return SweepSpec.from_file(path, limit=settings.max_trials_per_sweep)
    except FileNotFoundError:
        _fail(f"spec file not found: {path}")
    except (ValidationError, ValueError) as exc:
        _fail(f"invalid sweep spec {path}:\n{exc}")


db_app = typer.Typer(help="Database schema (Alembic migrations shipped in the package).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None) -> None:
    """Create or migrate the database schema to the newest revision."""
    from nero_study.store import db as store_db

    settings = _settings(db)
    store_db.upgrade(settings.database_url)
    console.print(f"database at revision {store_db.head_revision()}: {_redact(settings.database_url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def sweep(
    spec_path: Annotated[str, typer.Argument(metavar="SPEC", help="Sweep spec (YAML or JSON)")],
    db: Annotated[
        str | None, typer.Option(help="Database URL (default: NERO_STUDY_DATABASE_URL or ~/.nero-study)")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new sweep even if this spec ran before")] = False,
) -> None:
    """Run a sweep to completion on Ray Tune with a live progress view; prints the sweep id.

    Running the same spec again resumes its sweep: finished trials are kept, the rest run.
    """
    from rich.live import Live

    from nero_study.store import db as store_db
    from workers.foreground import SweepHeldElsewhere, run_sweep_in_foreground

    settings = _settings(db)
    spec = _load_spec(spec_path, settings)
    store_db.upgrade(settings.database_url)
    view = _ProgressView()
    with Live(view.render(), console=err_console, refresh_per_second=4, transient=False) as live:
        try:
            run = run_sweep_in_foreground(
                spec,
                settings,
                name=spec.name or spec_path,
                new=new,
                on_progress=lambda progress: live.update(view.render(progress)),
            )
        except SweepHeldElsewhere as exc:
            _fail(str(exc), code=1)
    console.print(f"sweep {run.sweep_id}: {run.status}")
    typer.echo(run.sweep_id)
    if run.status != "succeeded":
        raise typer.Exit(1)


class _ProgressView:
    """A one-table live view of a sweep's trials: done/running/diverged/failed and an ETA."""

    def render(self, progress: Any = None) -> Table:
        table = Table(show_header=True, header_style="bold")
        for column in ("done", "total", "succeeded", "running", "diverged", "failed", "execution", "ETA"):
            table.add_column(column, justify="right")
        if progress is None:
            table.add_row("0", "?", "0", "0", "0", "0", "", "")
            return table
        eta = progress.eta_seconds()
        table.add_row(
            str(progress.done),
            str(progress.total),
            str(progress.counts["succeeded"]),
            str(progress.counts["running"]),
            str(progress.counts["diverged"]),
            str(progress.counts["failed"]),
            progress.execution,
            "" if eta is None else f"{eta:.0f} s",
        )
        return table


@app.command()
def report(
    sweep_id: Annotated[str, typer.Argument(help="Sweep id (printed by `nero-study sweep`)")],
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    html: Annotated[str | None, typer.Option(help="Write a single-file HTML report to this path")] = None,
    latex: Annotated[bool, typer.Option("--latex", help="Print the paper-style table as booktabs LaTeX")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the paper-style table as Markdown")] = False,
    figures: Annotated[
        str | None, typer.Option("--figures", help="Also write every figure as SVG and PDF into this directory")
    ] = None,
) -> None:
    """Print the verdict, the paper-style table per task and the robustness metrics of a sweep."""
    from nero_study.store import db as store_db
    from nero_study.store import repo
    from nero_study.study.analysis import analyze_sweep, paper_table
    from nero_study.study.verdict import sweep_verdict
    from nero_study.vocabulary import SWEEP_FINISHED

    if output_format not in {"table", "json", "csv"}:
        _fail(f"Invalid --format {output_format!r}; valid: table, json, csv")
    if sum([latex, markdown, html is not None, output_format != "table"]) > 1:
        _fail("Choose one output: --latex, --markdown, --html or --format json/csv")
    settings = _settings(db)
    engine = store_db.make_engine(settings.database_url)
    with store_db.session_factory(engine)() as session:
        record = repo.get_sweep(session, sweep_id=sweep_id)
        if record is None:
            _fail(f"Unknown sweep {sweep_id!r}")
        frame = repo.trials_frame(session, sweep_id=sweep_id)
        spec_data, name, execution = dict(record.spec), record.name, record.execution
        status, error = record.status, record.error
    analysis = analyze_sweep(frame, protocol=_stored_protocol(spec_data))
    if figures is not None:
        _write_figures(sweep_id, settings, figures)
    if html:
        from dashboards.report import write_html_report

        write_html_report(sweep_id=sweep_id, database_url=settings.database_url, path=html)
        console.print(f"wrote {html}")
        return
    if latex or markdown:
        from nero_study.study.table_export import latex_table, markdown_table

        text = latex_table(analysis, caption=f"nero-study sweep {sweep_id} ({name})") if latex else None
        typer.echo(text if text is not None else markdown_table(analysis), nl=False)
        return
    rows = paper_table(analysis)
    verdict = sweep_verdict(analysis)
    from nero_study.study.bracket import stored_bracket_summaries

    bracket = stored_bracket_summaries(spec_data, frame, analysis, sweep_over=status in SWEEP_FINISHED)
    if output_format == "json":
        payload = {"sweep_id": sweep_id, "name": name, "status": status, "error": error, "execution": execution,
                   **analysis.to_dict()}
        if bracket:
            payload["bracket"] = [summary.to_dict() for summary in bracket]
        typer.echo(dumps({**payload, "verdict": verdict.to_dict()}))
        return
    if output_format == "csv":
        typer.echo(analysis.summary_frame().to_csv(index=False), nl=False)
        return
    if status not in SWEEP_FINISHED:
        console.print(f"[yellow]the sweep is {status}: the verdict is provisional[/]", highlight=False)
    _print_report(sweep_id, name, execution, spec_data, analysis, rows, verdict, status=status, error=error)
    if bracket:
        _print_bracket(bracket)


def _print_bracket(bracket: Sequence[Any]) -> None:
    """The ``bracket`` protocol's rounds per task and optimiser: the lrs each added, the budget used, the bracket."""
    table = Table(title="bracket rounds (round 0: the coarse grid; each later round adds one lr, on every seed)")
    for column in ("task", "optimizer", "lrs added, by round", "lrs used", "trials", "best lr", "bracket", "state"):
        table.add_column(column, justify="left" if column in ("task", "optimizer", "state") else "right")
    for b in bracket:
        rounds = "; ".join(f"{r.round}: {', '.join(format_number(lr, 'g') for lr in r.lrs)}" for r in b.rounds)
        window = f"{format_number(b.window[0], 'g')} - {format_number(b.window[1], 'g')}"
        table.add_row(
            b.task, b.label, rounds, f"{b.lrs_used} of {b.max_lrs}", str(b.trials_used),
            format_number(b.best_lr, "g"), window, b.state,
        )
    console.print(table)


def _write_figures(sweep_id: str, settings: Any, directory: str) -> None:
    """Every figure of the sweep page as SVG and PDF into ``directory``, rendered in ``settings.chromium_path``;
    what was written goes to stderr (stdout keeps the report)."""
    from dashboards.figure_export import FigureExportError
    from dashboards.report import write_figure_files

    try:
        paths = write_figure_files(
            sweep_id=sweep_id, database_url=settings.database_url, directory=directory,
            chromium=settings.chromium_path,
        )  # fmt: skip
    except FigureExportError as exc:
        _fail(f"--figures: {exc}")
    except OSError as exc:
        _fail(f"--figures: cannot write into {directory!r}: {exc}")
    err_console.print(f"wrote {len(paths)} figure files (SVG and PDF) to {directory}", highlight=False, soft_wrap=True)


def _stored_protocol(spec: dict) -> str | None:
    """The protocol a stored spec names (``None``: let the analysis read it from the trials' phases)."""
    from nero_study.vocabulary import PROTOCOLS

    protocol = spec.get("protocol")
    return protocol if protocol in PROTOCOLS else None


def _print_verdict(verdict: Any) -> None:
    """The verdict per task first: the out-of-the-box winners and one sentence built from the numbers."""
    from nero_study.study.verdict import EDGE_ADVICE

    for task in verdict.tasks:
        winners = ", ".join(task.winners) or "none established"
        console.print(f"[bold]verdict ({task.task})[/]: out-of-the-box winners: {winners}", highlight=False)
        console.print(f"  {task.sentence}", markup=False, highlight=False)
    for edge in verdict.edges:
        lr = format_number(edge.eta_star, "g")
        if edge.edge == "only":
            text = f"only one lr run ({lr}): no grid to tell the best from"
        else:
            text = f"{EDGE_ADVICE} (best lr {lr}, the {'lowest' if edge.edge == 'low' else 'highest'} it ran)"
        console.print(f"[yellow]{edge.task}/{edge.label}:[/] {text}", highlight=False)


def _print_report(
    sweep_id: str, name: str, execution: str | None, spec: dict, analysis: Any, rows: list, verdict: Any, *,
    status: str, error: str | None,
) -> None:
    console.print(
        f"[bold]sweep {sweep_id}[/] {escape(name)}  status {status}  (execution: {execution or 'n/a'}, "
        f"preset {spec.get('preset')})"
    )
    if error:
        console.print(f"[red]{escape(error)}[/]")
    _print_verdict(verdict)
    from nero_study.tasks.registry import task_caveats

    for task_name, caveat in task_caveats(spec.get("tasks", []) or []).items():
        console.print(f"[yellow]caveat ({task_name}):[/] {caveat}", markup=True, highlight=False)
    if analysis.failed_trials:
        console.print(
            f"[bold red]{analysis.failed_trials} failed trial(s)[/] (a crash, not evidence about the learning rate) "
            "left out of every metric; the 'failed' column counts them per optimiser."
        )
    by_task: dict[str, list] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
    for task_name, task_rows in by_task.items():
        table = Table(title=f"{task_name} — {task_rows[0].metric_name}")
        columns = (
            "optimizer",
            "best (mean ± std)",
            "95% interval (t, over seeds)",
            "binomial SE",
            "vs the best (paired over seeds)",
            "best lr",
            "out of the box",
            "default lr",
        )
        for column in columns:
            table.add_column(column, justify="left" if column in ("optimizer", columns[4]) else "right")
        for row in task_rows:
            table.add_row(
                ("* " if row.is_best else "  ") + row.label,
                row.text,
                row.interval_text,
                format_number(row.binomial_se, ".2g") if not math.isnan(row.binomial_se) else "",
                row.comparison or "best",
                format_number(row.eta_star, "g"),
                format_number(row.ootb),
                format_number(row.default_lr, "g"),
            )
        console.print(table)
        console.print("* the best, or not distinguishable from it (95% paired t-interval over seeds includes 0)")
    metrics = Table(title="robustness metrics (per task and optimiser)")
    columns = (
        "task",
        "optimizer",
        "ootb regret",
        "lr sensitivity",
        "good window (decades)",
        "window lrs",
        "E(best of 3 lrs)",
        "tuned ratio",
        "failed",
    )
    for column in columns:
        metrics.add_column(column, justify="left" if column in ("task", "optimizer") else "right")
    tuned = analysis.profiles.get("tuned")
    notes = []
    for s in analysis.per_optimizer:
        k3 = s.expected_best[min(3, len(s.expected_best)) - 1] if s.expected_best else math.nan
        low, high = s.good_window_lrs
        window_lrs = "" if math.isnan(low) else f"{format_number(low, 'g')}-{format_number(high, 'g')}"
        ratio = tuned.ratios.get(s.label, {}).get(s.task, math.inf) if tuned else math.nan
        kind = tuned.ratio_kinds.get(s.task, "") if tuned else ""
        metrics.add_row(
            s.task,
            s.label,
            format_number(s.ootb_regret, ".3g"),
            format_number(s.lr_sensitivity, ".3g"),
            format_number(s.good_window, ".2g"),
            window_lrs,
            format_number(k3),
            f"{format_number(ratio, '.3g')} ({kind})",
            str(s.failed),
        )
        if s.grid_metrics_note:
            notes.append(f"{s.task}/{s.label}: grid metrics {s.grid_metrics_note}")
    console.print(metrics)
    console.print(
        "ootb regret: (ootb - best of all) / (chance - best of all), 0 = the best, 1 = chance. Ratios (Dolan & More "
        "2002): a cost ratio (error, perplexity, FID: m / best) of 2 is twice the best optimiser's value; a gain "
        "ratio (returns, or any metric that is higher-is-better or can be <= 0: (chance - best) / (chance - m)) of "
        "2 is half the best optimiser's improvement over chance."
    )
    for note in dict.fromkeys(notes):
        console.print(note)
    profiles = Table(title="performance profile scores over tasks (1 = best on every task)")
    profiles.add_column("optimizer")
    for kind in analysis.profiles:
        profiles.add_column("out of the box" if kind == "ootb" else kind, justify="right")
    labels = list(dict.fromkeys(s.label for s in analysis.per_optimizer))
    for label in labels:
        scores = [format_number(p.scores.get(label, math.nan), ".3f") for p in analysis.profiles.values()]
        profiles.add_row(label, *scores)
    console.print(profiles)


@app.command(name="import")
def import_results(
    results: Annotated[str, typer.Argument(help="CSV of results computed elsewhere (one row per trial)")],
    name: Annotated[str | None, typer.Option("--name", help="Sweep name (default: the file's name)")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
) -> None:
    """Store results computed elsewhere as a finished sweep, so report, pages and /compare apply to them.

    Columns: task, optimizer and/or label, lr, seed, status, metric, and for a task this installation does
    not know metric_name, lower_is_better and chance; optional curve_file, source, note. A file with any bad
    row stores nothing; each problem is named by row and column.
    """
    from nero_study.errors import ResultsFileError
    from nero_study.store import db as store_db
    from nero_study.store import repo
    from nero_study.study.importing import read_results_file

    try:
        parsed = read_results_file(results, name=name)
    except ResultsFileError as exc:
        _fail(str(exc))
    settings = _settings(db)
    engine = store_db.make_engine(settings.database_url)
    with store_db.session_factory(engine)() as session:
        sweep = repo.import_sweep(
            session, name=parsed.spec["name"], spec=parsed.spec, trials=parsed.trials, curves=parsed.curves
        )
        sweep_id = sweep.id
    console.print(f"imported {len(parsed.trials)} trials as sweep {sweep_id} ({parsed.spec['name']})")
    typer.echo(sweep_id)


@app.command()
def worker(
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
    once: Annotated[bool, typer.Option("--once", help="Run at most one sweep, then exit")] = False,
    idle_timeout: Annotated[float | None, typer.Option(help="Exit after this many seconds with no work")] = None,
) -> None:
    """Claim queued sweeps one at a time and run them on Ray Tune (local Ray, or RAY_ADDRESS)."""
    import logging

    from workers.worker import SweepWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = _settings(db)
    from nero_study.store import db as store_db

    store_db.upgrade(settings.database_url)
    sweep_worker = SweepWorker(settings)
    sweep_worker.install_signal_handlers()
    try:
        count = sweep_worker.run_forever(once=once, idle_timeout=idle_timeout)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()  # stops the local Ray this worker started (raylet, GCS, its workers)
        logging.getLogger("nero_study.worker").info("worker %s: stopped", sweep_worker.owner)
    console.print(f"worker {sweep_worker.owner}: ran {count} sweep(s)")


@app.command(name="workers")
def list_workers(
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the sweep workers from their heartbeat rows: id, host, pid, started, last seen, current sweep, and
    whether each is alive (seen within NERO_STUDY_WORKER_ALIVE_SECONDS)."""
    from nero_study.store import db as store_db
    from nero_study.store import repo
    from nero_study.store.models import utc_now

    settings = _settings(db)
    store_db.upgrade(settings.database_url)
    now = utc_now()
    with store_db.session_factory(store_db.make_engine(settings.database_url))() as session:
        rows = [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "started_at": w.started_at.isoformat(timespec="seconds"),
                "last_seen": w.last_seen.isoformat(timespec="seconds"),
                "seconds_since_seen": round((now - w.last_seen).total_seconds(), 1),
                "current_sweep": w.current_sweep,
                "alive": repo.worker_is_alive(w, within_seconds=settings.worker_alive_seconds, now=now),
            }
            for w in repo.list_workers(session)
        ]
    if as_json:
        typer.echo(dumps(rows, indent=2))
        return
    table = Table(title=f"Workers (alive: seen within {settings.worker_alive_seconds:g} s)")
    for column in ("id", "host", "pid", "started", "last seen", "sweep", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            escape(row["id"]), escape(row["host"]), str(row["pid"]), row["started_at"],
            f"{row['seconds_since_seen']:g} s ago", row["current_sweep"] or "idle", "alive" if row["alive"] else "dead",
        )
    console.print(table)
    if not any(row["alive"] for row in rows):
        err_console.print("no worker is alive", highlight=False)
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000)")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL (default: SQLite under ~/.nero-study)")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes to start beside the API")] = 1,
    demo: Annotated[bool, typer.Option(help="Submit a small demo sweep when the database is empty")] = True,
) -> None:
    """The embedded default: the API and dashboards, plus worker process(es) on local Ray (restarted if one
    dies, and ended with the service whatever ends it)."""
    import logging
    import os

    import uvicorn

    from api.main import create_app
    from nero_study.store import db as store_db

    settings = _settings(db)
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    store_db.upgrade(settings.database_url)
    if demo and settings.seed_demo:
        from nero_study.study.queue import queue_demo_if_empty

        factory = store_db.session_factory(store_db.make_engine(settings.database_url))
        with factory() as session:
            created = queue_demo_if_empty(session)
        if created is not None:
            console.print(f"submitted demo sweep {created.id}")
    from workers.supervisor import WorkerSupervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = {**os.environ, "NERO_STUDY_DATABASE_URL": settings.database_url}
    supervisor = WorkerSupervisor(max(0, workers), env)
    supervisor.start()
    console.print(f"nero-study on http://{settings.host}:{settings.port}  ({workers} worker(s))")
    api_app = create_app(settings)
    if workers > 0:
        api_app.state.worker_status = supervisor.status  # /healthz reports them
        api_app.state.wake_workers = supervisor.wake  # a submitted sweep is claimed at once
    try:
        uvicorn.run(api_app, host=settings.host, port=settings.port, log_level="info")
    finally:
        supervisor.stop()


@app.command()
def submit(
    spec: Annotated[str, typer.Argument(metavar="SPEC", help="Sweep spec (.yaml/.yml/.json)")],
    url: Annotated[str | None, typer.Option(help="API URL (default $NERO_STUDY_URL or http://127.0.0.1:8000)")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (default $NERO_STUDY_TOKEN)")] = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key", help="Same key, same sweep")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the sweep finishes")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait")] = 3600.0,
) -> None:
    """Submit a sweep spec to a running service (validated locally first); prints its id."""
    import httpx

    from nero_study import client

    try:
        created = client.submit(
            spec,
            url=url,
            token=token,
            idempotency_key=idempotency_key,
            wait=wait,
            timeout=timeout,
            on_update=lambda s: err_console.print(client.progress_line(s), highlight=False),
        )
    except client.ApiError as exc:
        _fail(str(exc))
    except FileNotFoundError:
        _fail(f"spec file not found: {spec}")
    except ValueError as exc:
        _fail(f"invalid sweep spec {spec}:\n{exc}")
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the API: {exc}")
    except TimeoutError as exc:
        _fail(str(exc), code=1)
    typer.echo(created["id"])
    err_console.print(client.progress_line(created), highlight=False)


@app.command()
def status(
    sweep_id: Annotated[str | None, typer.Argument(help="Sweep id (default: the newest sweeps)")] = None,
    url: Annotated[str | None, typer.Option(help="API URL (default $NERO_STUDY_URL or http://127.0.0.1:8000)")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (default $NERO_STUDY_TOKEN)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show one sweep's status and trial counts, or the newest sweeps, from a running service."""
    import httpx

    from nero_study import client

    try:
        sweeps = client.status(sweep_id, url=url, token=token)
    except client.ApiError as exc:
        _fail(str(exc))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the API: {exc}")
    if as_json:
        typer.echo(dumps(sweeps, indent=2))
        return
    for item in sweeps:
        console.print(f"{item['id']}  {item['name']}  {client.progress_line(item)}", highlight=False)


token_app = typer.Typer(help="Bearer tokens for writes (stored hashed).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="A name to recognise the token by")] = "default",
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
) -> None:
    """Create a bearer token; it is printed once and only its SHA-256 hash is stored."""
    from nero_study.store import db as store_db
    from nero_study.store import repo

    settings = _settings(db)
    store_db.upgrade(settings.database_url)
    with store_db.session_factory(store_db.make_engine(settings.database_url))() as session:
        _, clear = repo.create_token(session, name=name)
    err_console.print("store this token now; it cannot be shown again:")
    typer.echo(clear)


@token_app.command("list")
def token_list(
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List the stored tokens: id, name, when created and last used, whether revoked (never the token or its
    hash). Tokens from NERO_STUDY_API_TOKENS are not stored and not listed."""
    from nero_study.store import db as store_db
    from nero_study.store import repo

    settings = _settings(db)
    store_db.upgrade(settings.database_url)
    with store_db.session_factory(store_db.make_engine(settings.database_url))() as session:
        rows = [_token_row(token) for token in repo.list_tokens(session)]
    if as_json:
        typer.echo(dumps(rows, indent=2))
        return
    table = Table(title="Stored bearer tokens")
    for column in ("id", "name", "created", "last used", "revoked"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for row in rows:
        table.add_row(
            str(row["id"]), escape(row["name"]), row["created_at"], row["last_used_at"] or "never",
            "revoked" if row["revoked"] else "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    key: Annotated[str, typer.Argument(metavar="ID|NAME", help="The token's id or name (see `token list`)")],
    db: Annotated[str | None, typer.Option(help="Database URL (default: settings)")] = None,
) -> None:
    """Revoke a stored token: from the next request on, it is refused with 401."""
    from nero_study.store import db as store_db
    from nero_study.store import repo

    settings = _settings(db)
    store_db.upgrade(settings.database_url)
    with store_db.session_factory(store_db.make_engine(settings.database_url))() as session:
        tokens = repo.list_tokens(session)
        matches = [t for t in tokens if key.isdigit() and t.id == int(key)] or [t for t in tokens if t.name == key]
        if not matches:
            known = ", ".join(f"{t.id} ({t.name})" for t in tokens) or "none stored"
            _fail(f"No token with id or name {key!r}; stored tokens: {known}")
        if len(matches) > 1:
            _fail(f"{len(matches)} tokens are named {key!r} (ids {', '.join(str(t.id) for t in matches)}); "
                  "revoke one by its id")
        (token,) = matches
        if token.revoked:
            console.print(f"token {token.id} ({escape(token.name)}) was already revoked", highlight=False)
            return
        repo.revoke_token(session, token_id=token.id)
    console.print(f"revoked token {token.id} ({escape(token.name)})", highlight=False)


def _token_row(token: Any) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "created_at": token.created_at.isoformat(timespec="seconds"),
        "last_used_at": token.last_used_at.isoformat(timespec="seconds") if token.last_used_at else None,
        "revoked": bool(token.revoked),
    }


data_app = typer.Typer(
    help="The paper tasks' data sets: fetch them (verified) and check what is present.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
_DataTarget = Annotated[str, typer.Argument(metavar="TASK|DATASET|all", help="A task, a data set, or all")]
_DataDir = Annotated[str | None, typer.Option("--dir", help="Data directory (default: NERO_STUDY_DATA_DIR)")]


@data_app.command("fetch")
def data_fetch(
    target: _DataTarget,
    directory: _DataDir = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even what is present")] = False,
) -> None:
    """Download, verify (size, SHA-256) and unpack a task's data sets; resumes interrupted downloads."""
    from nero_study import datasets as fetch

    try:
        code = fetch.fetch_command(target, directory, force=force, console=console)
    except ValueError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


@data_app.command("check")
def data_check(
    target: Annotated[str, typer.Argument(metavar="[TASK|DATASET|all]")] = "all", directory: _DataDir = None
) -> None:
    """List each task's data sets as present or missing (exit code 1 when something is missing)."""
    from nero_study import datasets as fetch

    try:
        code = fetch.check_command(target, directory, console=console)
    except ValueError as exc:
        _fail(str(exc))
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    app()
