"""The paper-style table of a sweep as LaTeX (booktabs) and Markdown, ready to paste into a paper or a README.

One row per (task, optimiser), tasks in sweep order separated by a rule. Columns: the task, the optimiser, the
tuned metric as ``mean ± h`` where ``h`` is the half-width of the analysis' 95% t-interval over seeds at the
best lr (just the mean with one seed, marked with a dagger and explained under the table), the best lr, the
out-of-the-box metric at the default lr, and the default lr. Bold marks the winners: in the tuned column the
task's best and every optimiser not distinguishable from it (``SweepAnalysis.is_best``); in the out-of-the-box
column the verdict's out-of-the-box winners (:mod:`nero_study.study.verdict`). Labels, task and metric names
are escaped (LaTeX: ``\\ & % $ # _ { } ~ ^``; Markdown: ``|``, ``*``, ``_`` and the backslash).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nero_study.formatting import format_number
from nero_study.study.analysis import SweepAnalysis, paper_table
from nero_study.study.verdict import sweep_verdict

HEADER = ("Task", "Optimiser", "Tuned (mean ± 95% CI)", "Best lr", "Out of the box", "Default lr")
ONE_SEED_NOTE = "one seed: no interval"
MISSING_LATEX = "--"

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with every LaTeX special character escaped, so it sets as written."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def markdown_escape(text: str) -> str:
    """``text`` safe inside a Markdown table cell (no column break, no emphasis)."""
    for char in ("\\", "|", "*", "_"):
        text = text.replace(char, "\\" + char)
    return text


@dataclass(frozen=True)
class TableCell:
    """A number of the table: its mean, the interval's half-width (NaN: none), and whether it is bold."""

    value: float
    half_width: float = math.nan
    bold: bool = False
    one_seed: bool = False


@dataclass(frozen=True)
class TableRow:
    task: str
    metric_name: str
    label: str
    tuned: TableCell
    best_lr: float
    ootb: TableCell
    default_lr: float


def table_rows(analysis: SweepAnalysis) -> tuple[TableRow, ...]:
    """The table's rows from the analysis (numbers only; :func:`latex_table`/:func:`markdown_table` write them)."""
    ootb_winners = {(t.task, label) for t in sweep_verdict(analysis).tasks for label in t.winners}
    rows = []
    for row in paper_table(analysis):
        half = (row.ci_high - row.ci_low) / 2 if math.isfinite(row.ci_low) and math.isfinite(row.ci_high) else math.nan
        rows.append(
            TableRow(
                task=row.task,
                metric_name=row.metric_name,
                label=row.label,
                tuned=TableCell(row.best, half, row.is_best, one_seed=row.seeds == 1),
                best_lr=row.eta_star,
                ootb=TableCell(row.ootb, bold=(row.task, row.label) in ootb_winners),
                default_lr=row.default_lr,
            )
        )
    return tuple(rows)


def _number(value: float) -> str:
    return format_number(value, ".4g")


def _latex_cell(cell: TableCell) -> str:
    if not math.isfinite(cell.value):
        return MISSING_LATEX
    text = _number(cell.value)
    if math.isfinite(cell.half_width):
        text += r" \pm " + format_number(cell.half_width, ".2g")
    text = rf"\mathbf{{{text}}}" if cell.bold else text
    return f"${text}$" + (r"$^\dagger$" if cell.one_seed else "")


def _latex_lr(value: float) -> str:
    return format_number(value, "g") if math.isfinite(value) else MISSING_LATEX


def latex_table(analysis: SweepAnalysis, *, caption: str | None = None) -> str:
    """The table as a booktabs ``tabular`` (``\\usepackage{booktabs}``), with its notes as a comment and, when
    a number has no interval, a footnote line after the bottom rule."""
    rows = table_rows(analysis)
    lines = []
    if caption:
        lines.append("% " + caption.replace("\n", " "))
    lines += [r"\begin{tabular}{llrrrr}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h).replace("±", r"$\pm$") for h in HEADER) + r" \\")
    previous = None
    for row in rows:
        if row.task != previous:
            lines.append(r"\midrule")
            previous = row.task
            task = latex_escape(row.task) + (f" ({latex_escape(row.metric_name)})" if row.metric_name else "")
        else:
            task = ""
        cells = [task, latex_escape(row.label), _latex_cell(row.tuned), _latex_lr(row.best_lr)]
        cells += [_latex_cell(row.ootb), _latex_lr(row.default_lr)]
        lines.append(" & ".join(cells) + r" \\")
    lines.append(r"\bottomrule")
    if any(row.tuned.one_seed for row in rows):
        lines.append(r"\multicolumn{6}{l}{\footnotesize $^\dagger$ " + ONE_SEED_NOTE + r"} \\")
    lines.append(r"\end{tabular}")
    return "\n".join(lines) + "\n"


def _markdown_cell(cell: TableCell) -> str:
    if not math.isfinite(cell.value):
        return "—"
    text = _number(cell.value)
    if math.isfinite(cell.half_width):
        text += " ± " + format_number(cell.half_width, ".2g")
    text = f"**{text}**" if cell.bold else text
    return text + (" †" if cell.one_seed else "")


def markdown_table(analysis: SweepAnalysis) -> str:
    """The table as a GitHub-flavoured Markdown table, with a note under it when a number has no interval."""
    rows = table_rows(analysis)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join([":---", ":---", "---:", "---:", "---:", "---:"]) + "|"]
    for row in rows:
        task = markdown_escape(row.task) + (f" ({markdown_escape(row.metric_name)})" if row.metric_name else "")
        cells = [task, markdown_escape(row.label), _markdown_cell(row.tuned), format_number(row.best_lr, "g")]
        cells += [_markdown_cell(row.ootb), format_number(row.default_lr, "g")]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "Bold: the best tuned result and every optimiser not distinguishable from it (95% paired t-interval "
        "over seeds); out of the box, the verdict's winners."
    ]
    if any(row.tuned.one_seed for row in rows):
        notes.append(f"† {ONE_SEED_NOTE}.")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


__all__ = [
    "HEADER",
    "TableCell",
    "TableRow",
    "latex_escape",
    "latex_table",
    "markdown_escape",
    "markdown_table",
    "table_rows",
]
