"""`nero-study report` of a bracket sweep: the lrs each round added, the budget used and why the bracket stopped."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nero_study.cli import app
from nero_study.store import db
from tests.dashboards.test_bracket_page import store_bracket_sweep

runner = CliRunner()


def test_report_lists_the_bracket_rounds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bracket.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    with db.session_factory(engine)() as session:
        sweep_id = store_bracket_sweep(session)
    engine.dispose()
    table = runner.invoke(app, ["report", sweep_id, "--db", url], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "bracket rounds (round 0: the coarse grid" in text
    assert "0: 0.0001, 0.001, 0.01; 1: 0.1; 2: 0.00316228 │ 5 of 6 │ 5 │ 0.01 │ 0.00316228 - 0.1" in text
    assert "resolved: best lr 0.01, its better neighbour 0.00316228 is 0.5 decades away (<= 0.5)" in text
    payload = json.loads(runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "json"]).stdout)
    (bracket,) = payload["bracket"]
    assert [r["lrs"] for r in bracket["rounds"]] == [[0.0001, 0.001, 0.01], [0.1], [0.00316228]]
    assert bracket["lrs_used"] == 5 and bracket["window"] == [0.00316228, 0.1]
    assert payload["per_optimizer"][0]["protocol"] == "bracket"
