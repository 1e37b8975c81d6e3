"""Results computed elsewhere, read from a CSV file into trial records the store keeps as a finished sweep.

One row per trial. Columns (a header row names them; order is free):

- ``task`` (required): a task name. A task this installation knows takes its metric name, orientation and
  chance level from the registry; any other needs ``metric_name``, ``lower_is_better`` and ``chance``.
- ``optimizer`` and/or ``label`` (one required): the optimiser and its variant label (each defaults to the
  other). A registered optimiser's default lr gives the out-of-the-box point when that lr is in the file.
- ``lr`` (required, > 0), ``seed`` (integer, default 0), ``status`` (required: succeeded, diverged or failed),
  ``metric`` (the final metric; required and finite for a succeeded row, may be empty otherwise).
- ``metric_name``, ``lower_is_better`` (true/false), ``chance`` (the metric at chance/initialisation, in the
  metric's units): required for an unknown task, optional (and then checked against the registry) otherwise.
- ``curve_file`` (optional): a CSV of the trial's learning curve with columns ``step`` and ``metric`` (and
  optionally ``epoch``, ``train_loss``), relative to the results file's folder.
- ``source`` and ``note`` (optional): where the number comes from; kept with the sweep's spec.

Every problem is reported at once as ``row N, column C: ...`` (N counts the header as row 1, as a
spreadsheet does); a file with any problem raises :class:`~nero_study.errors.ResultsFileError` and nothing is
stored.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nero_study.errors import ResultsFileError
from nero_study.vocabulary import TRIAL_OUTCOMES

REQUIRED_COLUMNS: tuple[str, ...] = ("task", "lr", "status")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "optimizer",
    "label",
    "seed",
    "metric",
    "metric_name",
    "lower_is_better",
    "chance",
    "curve_file",
    "source",
    "note",
)
ALLOWED_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


@dataclass
class ImportedResults:
    """The trials of a results file, ready for ``repo.import_sweep``; ``spec`` describes the import."""

    trials: list[dict[str, Any]]
    curves: list[list[dict[str, float]]]  # one per trial, in the same order (empty: no curve)
    spec: dict[str, Any] = field(default_factory=dict)


def _known_task(name: str) -> Any | None:
    from nero_study.tasks.registry import TASKS, get_task

    return get_task(name) if name in TASKS else None


def _number(text: str) -> float:
    return float(text.strip())


def _read_curve(path: Path, where: str, problems: list[str]) -> list[dict[str, float]]:
    if not path.is_file():
        problems.append(f"{where}: curve file {str(path)!r} does not exist")
        return []
    try:
        return _read_curve_rows(path, where, problems)
    except csv.Error as exc:
        problems.append(f"{where}: curve file {path.name!r} is not valid CSV ({exc})")
        return []


def _read_curve_rows(path: Path, where: str, problems: list[str]) -> list[dict[str, float]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"step", "metric"} <= columns:
            problems.append(f"{where}: curve file {path.name!r} needs columns step and metric; has {sorted(columns)}")
            return []
        points = []
        for number, row in enumerate(reader, start=2):
            try:
                point = {"step": float(int(row["step"])), "metric": _number(row["metric"])}
                for extra in ("epoch", "train_loss"):
                    if row.get(extra) not in (None, ""):
                        point[extra] = _number(row[extra])
            except ValueError:
                problems.append(
                    f"{where}: curve file {path.name!r} row {number}: step must be an integer, "
                    "metric/epoch/train_loss numbers"
                )
                return []
            points.append(point)
    return points


def parse_results(
    text: str, *, base_dir: Path | None = None, name: str = "imported", allow_curve_files: bool = True
) -> ImportedResults:
    """Read a results CSV (module docstring); raise :class:`ResultsFileError` listing every bad row and column.

    ``allow_curve_files=False`` (an upload, which has no folder to read them from) makes ``curve_file`` an error.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return _parse_rows(reader, base_dir=base_dir, name=name, allow_curve_files=allow_curve_files)
    except csv.Error as exc:
        raise ResultsFileError(f"Bad results file:\nrow {reader.line_num}: not valid CSV ({exc})") from None


def _parse_rows(
    reader: csv.DictReader, *, base_dir: Path | None, name: str, allow_curve_files: bool
) -> ImportedResults:
    header = [column.strip() for column in (reader.fieldnames or [])]
    if not header:
        raise ResultsFileError("The results file is empty: it needs a header row naming its columns")
    reader.fieldnames = header
    problems: list[str] = []
    unknown = [column for column in header if column not in ALLOWED_COLUMNS]
    if unknown:
        problems.append(f"row 1: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_COLUMNS)}")
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if "optimizer" not in header and "label" not in header:
        missing.append("optimizer or label")
    if missing:
        problems.append(f"row 1: missing column(s) {', '.join(missing)}")
    if problems:
        raise ResultsFileError("Bad results file:\n" + "\n".join(problems))

    trials: list[dict[str, Any]] = []
    curves: list[list[dict[str, float]]] = []
    sources: dict[str, str] = {}
    task_info: dict[str, tuple[str, bool, float]] = {}
    seen: dict[tuple[str, str, float, int], int] = {}
    for number, raw in enumerate(reader, start=2):
        row = {key: (value or "").strip() for key, value in raw.items() if key is not None}
        if not any(row.values()):
            continue  # a blank line

        def bad(column: str, message: str, number: int = number) -> None:
            problems.append(f"row {number}, column {column}: {message}")

        task = row.get("task", "")
        if not task:
            bad("task", "empty; name the task")
        optimizer = row.get("optimizer", "") or row.get("label", "")
        label = row.get("label", "") or optimizer
        if not optimizer:
            bad("optimizer", "empty; name the optimiser (or give a label)")
        try:
            lr = _number(row.get("lr", ""))
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError
        except ValueError:
            bad("lr", f"{row.get('lr', '')!r} is not a positive number")
            lr = math.nan
        seed_text = row.get("seed", "") or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            bad("seed", f"{seed_text!r} is not an integer")
            seed = 0
        status = row.get("status", "")
        if status not in TRIAL_OUTCOMES:
            bad("status", f"{status!r}; valid: {', '.join(TRIAL_OUTCOMES)}")
        metric_text = row.get("metric", "")
        metric = math.nan
        if metric_text:
            try:
                metric = _number(metric_text)
            except ValueError:
                bad("metric", f"{metric_text!r} is not a number")
        if status == "succeeded" and not math.isfinite(metric):
            bad("metric", "a succeeded trial needs a finite final metric")

        known = _known_task(task) if task else None
        lower_text = row.get("lower_is_better", "").lower()
        lower: bool | None = None
        if lower_text:
            if lower_text in _TRUE | _FALSE:
                lower = lower_text in _TRUE
            else:
                bad("lower_is_better", f"{row['lower_is_better']!r}; valid: true or false")
        chance: float | None = None
        if row.get("chance"):
            try:
                chance = _number(row["chance"])
                if not math.isfinite(chance):
                    raise ValueError
            except ValueError:
                bad("chance", f"{row['chance']!r} is not a finite number")
        metric_name = row.get("metric_name", "")
        if known is not None:
            if lower is not None and lower != bool(known.lower_is_better):
                bad("lower_is_better", f"task {task!r} is {'lower' if known.lower_is_better else 'higher'}-is-better")
            lower = bool(known.lower_is_better)
            metric_name = metric_name or known.metric_name
            chance = known.chance_metric if chance is None else chance
        elif task:
            for column, value in (("metric_name", metric_name), ("lower_is_better", lower), ("chance", chance)):
                if value in ("", None):
                    bad(column, f"task {task!r} is not a known task, so the file must give its {column}")
        if task and lower is not None and chance is not None and metric_name:
            previous = task_info.setdefault(task, (metric_name, lower, chance))
            if previous != (metric_name, lower, chance):
                bad("task", f"task {task!r} has a different metric_name, lower_is_better or chance on another row")
        curve: list[dict[str, float]] = []
        if row.get("curve_file") and not allow_curve_files:
            bad("curve_file", "curve files cannot be read from an upload; import the file with `nero-study import`")
        elif row.get("curve_file"):
            curve = _read_curve(
                (base_dir or Path(".")) / row["curve_file"], f"row {number}, column curve_file", problems
            )
        key = (task, label, lr, seed)
        if key in seen:
            bad("seed", f"the same task, label, lr and seed as row {seen[key]}")
        seen.setdefault(key, number)
        if row.get("source"):
            sources[f"{task}/{label}/{lr:g}/{seed}"] = row["source"]
        trials.append(
            {
                "task": task,
                "optimizer": optimizer,
                "label": label,
                "lr": lr,
                "seed": seed,
                "budget": "paper",
                "preset": "paper",
                "phase": "grid",
                "status": status,
                "metric": metric if math.isfinite(metric) else None,
                "initial_metric": chance,
                "metric_name": metric_name or None,
                "lower_is_better": lower,
                "error": row.get("note") or None,
            }
        )
        curves.append(curve)
    if not trials and not problems:
        problems.append("row 2: no results; the file has a header but no rows")
    if problems:
        raise ResultsFileError("Bad results file:\n" + "\n".join(problems))
    spec = {
        "name": name,
        "imported": True,
        "protocol": "grid",
        "tasks": list(dict.fromkeys(t["task"] for t in trials)),
        "optimizers": list(dict.fromkeys(t["label"] for t in trials)),
        "seeds": sorted({t["seed"] for t in trials}),
        "sources": sources,
    }
    return ImportedResults(trials=trials, curves=curves, spec=spec)


def read_results_file(path: Path | str, *, name: str | None = None) -> ImportedResults:
    """:func:`parse_results` of a file; curve files are found relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise ResultsFileError(f"Results file {str(path)!r} does not exist")
    return parse_results(path.read_text(), base_dir=path.parent, name=name or path.stem)


__all__ = [
    "ALLOWED_COLUMNS",
    "ImportedResults",
    "parse_results",
    "read_results_file",
]
