"""The paper-style table as Markdown and LaTeX, on the hand-made sweep of test_study_verdict.py.

Numbers (95% t-interval half-widths, t_{0.975, 2} = 4.303, three seeds):
  nero  tuned 0.100 ± 4.303 * 0.002 / sqrt(3) = 0.0050, the best; out of the box 0.1 (a verdict winner)
  adam  tuned 0.101 ± 4.303 * 0.001 / sqrt(3) = 0.0025, not distinguishable from nero (bold); ootb 0.3
  sgd   tuned 0.18  ± 4.303 * 0.01 / sqrt(3)  = 0.025, behind; ootb 0.18
  lamb  tuned 0.103 ± 0.0025, paired with nero 0.003 ± 0.0025 (distinguishable, not bold); ootb 0.1035 (winner)
No TeX engine is installed here, so the LaTeX is parsed as a tabular rather than compiled (see
``test_latex_compiles_when_a_tex_engine_is_installed``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nero_study.study.analysis import analyze_sweep
from nero_study.study.table_export import HEADER, latex_escape, latex_table, markdown_table
from tests.study.test_study_verdict import base_sweep


def markdown_cells(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in ``text``, each a list of its cells (escaped pipes kept)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = []
    for line in lines:
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip() for cell in cells])
    return rows


def test_markdown_is_a_table_with_the_right_cells():
    rows = markdown_cells(markdown_table(analyze_sweep(base_sweep())))
    header, separator, *body = rows
    assert header == list(HEADER)
    assert all(re.fullmatch(r":?-{3,}:?", cell) for cell in separator) and len(separator) == len(header)
    assert all(len(row) == len(header) for row in body)
    by_label = {row[1]: row for row in body}
    assert by_label["nero"] == ["T (test error)", "nero", "**0.1 ± 0.005**", "0.01", "**0.1**", "0.01"]
    assert by_label["adam"][2:] == ["**0.101 ± 0.0025**", "0.01", "0.3", "0.001"]
    assert by_label["sgd"][2:] == ["0.18 ± 0.025", "0.1", "0.18", "0.1"]
    assert by_label["lamb"][2:] == ["0.103 ± 0.0025", "0.001", "**0.1035**", "0.01"]


def test_markdown_marks_a_number_without_interval():
    text = markdown_table(analyze_sweep(base_sweep(seeds=(0,))))
    body = markdown_cells(text)[2:]
    assert all(row[2].endswith(" †") and "±" not in row[2] for row in body)
    assert "† one seed: no interval." in text
    assert not any("**" in row[4] for row in body)  # one seed: no out-of-the-box winner is claimed


def parse_tabular(text: str) -> tuple[int, list[list[str]]]:
    """Check ``text`` is one balanced booktabs tabular and return its column count and its data rows' cells."""
    assert text.count(r"\begin{tabular}") == 1 and text.count(r"\end{tabular}") == 1
    match = re.search(r"\\begin\{tabular\}\{([lrc|]+)\}(.*)\\end\{tabular\}", text, re.S)
    assert match, "no tabular"
    columns = len(re.findall(r"[lrc]", match.group(1)))
    body = match.group(2)
    rules = [line.strip() for line in body.splitlines() if line.strip() in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules[0] == r"\toprule" and rules[-1] == r"\bottomrule" and r"\midrule" in rules
    unescaped = re.sub(r"\\[\\&%$#_{}]", "", body)  # drop escaped specials before counting
    assert unescaped.count("{") == unescaped.count("}"), "unbalanced braces"
    rows = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line in rules or line.startswith("%"):
            continue
        assert line.endswith(r"\\"), f"row not ended: {line}"
        content = re.sub(r"\\[\\&%$#_{}]", "", line[:-2])
        assert content.count("$") % 2 == 0, f"unbalanced math in {line}"
        span = re.match(r"\\multicolumn\{(\d+)\}", content)
        assert (int(span.group(1)) if span else content.count("&") + 1) == columns, f"column count: {line}"
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)&", line[:-2])])
    return columns, rows


def test_latex_parses_as_a_booktabs_tabular_with_the_winners_in_bold():
    columns, rows = parse_tabular(latex_table(analyze_sweep(base_sweep())))
    assert columns == len(HEADER)
    header, *body = rows
    assert header[2] == r"Tuned (mean $\pm$ 95\% CI)"
    by_label = {row[1]: row for row in body}
    assert by_label["nero"][0] == "T (test error)" and by_label["adam"][0] == ""  # the task once per group
    assert by_label["nero"][2] == r"$\mathbf{0.1 \pm 0.005}$" and by_label["nero"][4] == r"$\mathbf{0.1}$"
    assert by_label["sgd"][2] == r"$0.18 \pm 0.025$"


def test_latex_escapes_special_characters_in_labels():
    rows = base_sweep()
    for row in rows:
        if row["label"] == "lamb":
            row["label"] = "lamb_50%#&{x}~^\\"
    text = latex_table(analyze_sweep(rows))
    _, parsed = parse_tabular(text)
    escaped = r"lamb\_50\%\#\&\{x\}\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert escaped in text and any(row[1] == escaped for row in parsed)
    assert latex_escape("a_b") == r"a\_b"
    table = markdown_table(analyze_sweep([{**r, "label": "a|b"} if r["label"] == "nero" else r for r in rows]))
    assert any(row[1] == r"a\|b" for row in markdown_cells(table)[2:])


def test_latex_with_one_seed_has_a_footnote_spanning_the_table():
    text = latex_table(analyze_sweep(base_sweep(seeds=(0,))))
    parse_tabular(text)
    assert r"\multicolumn{6}{l}{\footnotesize $^\dagger$ one seed: no interval} \\" in text


@pytest.mark.skipif(not (shutil.which("pdflatex") or shutil.which("lualatex")), reason="no TeX engine installed")
def test_latex_compiles_when_a_tex_engine_is_installed(tmp_path: Path):
    engine = shutil.which("pdflatex") or shutil.which("lualatex")
    document = tmp_path / "table.tex"
    body = latex_table(analyze_sweep(base_sweep()))
    document.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\\end{document}\n"
    )
    subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path, check=True)
    assert (tmp_path / "table.pdf").stat().st_size > 0
