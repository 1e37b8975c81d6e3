"""The `nero-study` command line, through typer's runner (in process) as a user would call it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nero_study.cli import app
from nero_study.store import db, repo
from nero_study.tasks.base import TrialSpec
from nero_study.tasks.registry import get_task
from nero_study.tasks.runner import run_trial

runner = CliRunner()


def strict_json(text: str):
    """Parse as jq or JavaScript would: ``NaN``/``Infinity`` (Python's json extension) are errors."""

    def reject(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def test_optimizers_lists_the_registry_with_default_lrs() -> None:
    result = runner.invoke(app, ["optimizers", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in strict_json(result.output)}
    assert {name: rows[name]["default_lr"] for name in ("nero", "sgd", "adam", "lamb")} == {
        "nero": 0.01,
        "sgd": 0.1,
        "adam": 0.001,
        "lamb": 0.01,
    }
    assert rows["adam"]["presets"]["paper"]["betas"] == [0.0, 0.999]


def test_tasks_lists_every_task_with_metric_and_budgets() -> None:
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in strict_json(result.output)}
    assert {"digits-mlp", "text-lm", "ppo-cartpole", "cifar10-vgg11", "ppo-pong"} <= set(rows)
    assert rows["ppo-cartpole"]["lower_is_better"] is False
    assert rows["digits-mlp"]["budgets"] == ["smoke", "proxy", "paper"]


def test_listings_show_the_settings_each_trial_builds_its_optimisers_with() -> None:
    """For every task, optimiser, preset and network, what ``tasks --json`` lists is what the trial's optimiser
    gets: the listing and the trial runner resolve settings in one place."""
    import torch

    from nero_study.tasks.base import TrialContext
    from nero_study.tasks.registry import get_task

    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    checked = 0
    for row in json.loads(result.output):
        task = get_task(row["name"])
        assert row["networks"] == list(task.networks)
        for preset, per_optimizer in row["optimizer_settings"].items():
            for optimizer, per_network in per_optimizer.items():
                spec = TrialSpec(task=row["name"], optimizer=optimizer, lr=0.01, preset=preset)
                context = TrialContext(spec, task, torch.device("cpu"))
                for network, listed in per_network.items():
                    built = context.build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], network=network)
                    group = built.param_groups[0]
                    used = {key: list(group[key]) if isinstance(group[key], tuple) else group[key] for key in listed}
                    assert used == listed, (row["name"], preset, optimizer, network)
                    checked += 1
    assert checked >= 16 * 5 * 2  # every task x optimiser x preset, and both GAN networks
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["mnist-mlp100"]["optimizer_settings"]["paper"]["adam"]["model"]["betas"] == [0.9, 0.999]
    assert rows["cifar10-cgan"]["optimizer_settings"]["paper"]["adam"] == {
        "generator": {"betas": [0.0, 0.999], "eps": 1e-8},
        "discriminator": {"betas": [0.9, 0.999], "eps": 1e-8},
    }
    imagenet_sgd = {"momentum": 0.9, "weight_decay": 0.0001}
    assert rows["imagenet-resnet50"]["paper_overrides"] == {"model": {"sgd": imagenet_sgd}}
    assert "zero-mean constraint" in rows["ppo-cartpole"]["caveat"]
    assert rows["wikitext2-transformer"]["curve_metric_name"] == "validation perplexity"


def test_optimizers_table_names_where_defaults_come_from_and_the_task_overrides(monkeypatch) -> None:  # noqa: ANN001
    from rich.console import Console

    import nero_study.cli as cli

    monkeypatch.setattr(cli, "console", Console(width=400))
    result = runner.invoke(app, ["optimizers"])
    assert result.exit_code == 0, result.output
    assert "mnist-mlp100: betas=(0.9, 0.999)" in result.output
    assert "cifar10-cgan/discriminator: betas=(0.9, 0.999)" in result.output
    assert "imagenet-resnet50: momentum=0.9, weight_decay=0.0001" in result.output
    assert "ppo-pong: eps=1e-05" in result.output
    assert "the paper's out-of-the-box lr" in result.output and "this project's choice" in result.output
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["optimizers", "--json"]).output)}
    imagenet_sgd = {"momentum": 0.9, "weight_decay": 0.0001}
    assert rows["sgd"]["task_overrides"] == {"imagenet-resnet50": {"model": imagenet_sgd}}
    assert rows["nero"]["task_overrides"] == {}


def test_tasks_table_shows_overrides_and_caveats(monkeypatch) -> None:  # noqa: ANN001
    from rich.console import Console

    import nero_study.cli as cli

    monkeypatch.setattr(cli, "console", Console(width=400))
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert "adam/discriminator: betas=(0.9, 0.999)" in result.output
    assert "sgd: momentum=0.9, weight_decay=0.0001" in result.output
    assert "caveat:" in result.output and "zero-mean constraint" in result.output
    assert "test perplexity (curve: validation perplexity)" in result.output


def test_trial_json_is_complete_and_the_same_twice() -> None:
    args = ["trial", "--task", "digits-mlp", "--optimizer", "nero", "--lr", "0.01", "--budget", "smoke", "--json"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    one, two = strict_json(first.stdout), strict_json(second.stdout)
    for key in ("status", "metric", "metric_name", "lower_is_better", "curve", "wall_s", "device"):
        assert key in one
    assert one["status"] == "succeeded" and one["metric_name"] == "test_error"
    assert one["curve"][0]["step"] == 0 and set(one["curve"][0]) >= {"step", "metric", "train_loss"}
    assert (one["metric"], one["curve"]) == (two["metric"], two["curve"])
    assert one["settings"] == {"model": {"beta": 0.999, "constraints": True}}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--task", "nope", "--optimizer", "nero"], "valid: digits-mlp"),
        (["--task", "digits-mlp", "--optimizer", "rmsprop"], "valid: nero, sgd, adam, lamb"),
        (["--task", "digits-mlp", "--optimizer", "nero", "--lr", "-1"], "Invalid lr: -1.0"),
        (["--task", "digits-mlp", "--optimizer", "nero", "--lr", "0"], "positive"),
        (["--task", "digits-mlp", "--optimizer", "adam", "--set", "betaz=[0,1]"], "valid: betas"),
        (["--task", "digits-mlp", "--optimizer", "nero", "--budget", "huge"], "valid: smoke, proxy, paper"),
    ],
)
def test_trial_bad_input_exits_2_naming_the_valid_values(args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["trial", *args, "--budget", "smoke"] if "--budget" not in args else ["trial", *args])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())


def test_a_diverging_trial_is_a_normal_result() -> None:
    args = ["trial", "--task", "digits-mlp", "--optimizer", "adam", "--lr", "10", "--budget", "smoke", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = strict_json(result.stdout)
    assert payload["status"] == "diverged"
    # the curve's first point has no training loss yet, and the diverged run's last metric may be NaN: null
    assert payload["curve"][0]["train_loss"] is None


@pytest.fixture
def stored_sweep(tmp_path: Path) -> tuple[str, str]:
    """A finished sweep written through the store (trials run in process, no Ray)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    spec = {"tasks": ["digits-mlp"], "optimizers": ["nero", "sgd"], "lrs": [0.01, 0.1], "budget": "smoke"}
    with factory() as session:
        sweep = repo.create_sweep(session, spec=spec, name="cli-report")[0]
        rows = repo.add_trials(
            session,
            sweep_id=sweep.id,
            trials=[
                {**TrialSpec(task="digits-mlp", optimizer=o, lr=lr, budget="smoke").to_dict(), "phase": "grid"}
                for o in ("nero", "sgd")
                for lr in (0.01, 0.1)
            ],
        )
        for row in rows:
            result = run_trial(TrialSpec(task=row.task, optimizer=row.optimizer, lr=row.lr, budget="smoke"))
            repo.record_trial_result(session, trial_id=row.id, result=result)
    return url, sweep.id


def test_report_prints_the_paper_table_and_machine_formats(stored_sweep: tuple[str, str]) -> None:
    url, sweep_id = stored_sweep
    table = runner.invoke(app, ["report", sweep_id, "--db", url], env={"COLUMNS": "160"})
    assert table.exit_code == 0, table.output
    assert "digits-mlp" in table.output and "out of the box" in table.output and "nero" in table.output
    as_json = strict_json(runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "json"]).stdout)
    labels = {row["label"] for row in as_json["per_optimizer"]}
    assert labels == {"nero", "sgd"}
    csv = runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "csv"]).stdout
    assert csv.splitlines()[0].startswith("task,label")
    assert len(csv.strip().splitlines()) == 3


def test_report_states_the_caveats_of_its_tasks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'caveat.db'}"
    db.upgrade(url)
    spec = {"tasks": ["ppo-cartpole", "digits-mlp"], "optimizers": ["nero"], "lrs": [0.01], "budget": "smoke"}
    with db.session_factory(db.make_engine(url))() as session:
        sweep = repo.create_sweep(session, spec=spec, name="caveats")[0]
    result = runner.invoke(app, ["report", sweep.id, "--db", url], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    caveat = " ".join(get_task("ppo-cartpole").caveat.split())
    assert f"caveat (ppo-cartpole): {caveat}" in " ".join(result.output.split())
    assert "caveat (digits-mlp)" not in result.output  # only tasks with a known limit
    assert "the sweep is queued: the verdict is provisional" in result.output


def test_report_says_how_many_trials_failed_and_leaves_them_out(stored_sweep: tuple[str, str]) -> None:
    url, sweep_id = stored_sweep
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        spec = TrialSpec(task="digits-mlp", optimizer="nero", lr=1.0, budget="smoke")
        row = repo.add_trials(session, sweep_id=sweep_id, trials=[{**spec.to_dict(), "phase": "grid"}])[0]
        repo.finish_trial(session, trial_id=row.id, status="failed", error="RuntimeError: out of memory")
    table = runner.invoke(app, ["report", sweep_id, "--db", url], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "1 failed trial(s)" in table.output and "left out of every metric" in table.output
    as_json = strict_json(runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "json"]).stdout)
    assert as_json["failed_trials"] == 1
    nero = next(s for s in as_json["per_optimizer"] if s["label"] == "nero")
    assert nero["failed"] == 1 and [p["lr"] for p in nero["curve"]] == [0.01, 0.1, 1.0]
    assert nero["curve"][-1]["seeds"] == 0  # the crash is marked, not averaged in as chance


def test_report_of_an_unknown_sweep_fails_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    db.upgrade(url)
    result = runner.invoke(app, ["report", "nosuchsweep", "--db", url])
    assert result.exit_code == 2 and "Unknown sweep 'nosuchsweep'" in result.output


def test_db_upgrade_and_token_create_store_only_a_hash(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tok.db'}"
    assert runner.invoke(app, ["db", "upgrade", "--db", url]).exit_code == 0
    result = runner.invoke(app, ["token", "create", "--name", "ci", "--db", url])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        assert repo.verify_token(session, token=token)
        stored = [t.token_hash for t in repo.list_tokens(session)]
    assert token not in stored and len(stored) == 1


def test_sweep_with_a_bad_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("tasks: [digits-mlp, nope]\noptimizers: [nero]\nlrs: [0.01]\n")
    result = runner.invoke(app, ["sweep", str(spec), "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 2
    assert "nope" in result.output and "valid:" in result.output


IMPORTED = """task,optimizer,lr,seed,status,metric,metric_name,lower_is_better,chance
translation,nero,0.01,0,succeeded,11.35,perplexity,true,30000
translation,sgd,0.1,0,succeeded,92.4,perplexity,true,30000
translation,adam,0.001,0,failed,,perplexity,true,30000
"""


def test_import_stores_a_finished_sweep_the_report_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    db.upgrade(url)
    results = tmp_path / "paper.csv"
    results.write_text(IMPORTED)
    done = runner.invoke(app, ["import", str(results), "--name", "paper table", "--db", url])
    assert done.exit_code == 0, done.output
    sweep_id = done.stdout.strip().splitlines()[-1]
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        sweep = repo.get_sweep(session, sweep_id=sweep_id)
        assert (sweep.name, sweep.status) == ("paper table", "succeeded")
    as_json = strict_json(runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "json"]).stdout)
    assert as_json["profiles"]["tuned"]["ratios"]["sgd"]["translation"] == pytest.approx(92.4 / 11.35, rel=1e-12)
    assert as_json["failed_trials"] == 1
    table = runner.invoke(app, ["report", sweep_id, "--db", url], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "1 failed trial(s)" in table.output


def test_import_of_a_bad_file_names_row_and_column_and_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'imp.db'}"
    db.upgrade(url)
    results = tmp_path / "bad.csv"
    results.write_text(IMPORTED + "translation,lamb,zero,0,succeeded,20,perplexity,true,30000\n")
    done = runner.invoke(app, ["import", str(results), "--db", url])
    assert done.exit_code == 2
    assert "row 5, column lr: 'zero' is not a positive number" in done.output
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        assert repo.list_sweeps(session)[1] == 0


def _verdict_csv(rows: list[dict]) -> str:
    lines = ["task,optimizer,lr,seed,status,metric,metric_name,lower_is_better,chance"]
    lines += [
        f"{r['task']},{r['optimizer']},{r['lr']},{r['seed']},{r['status']},{r['metric']},test error,true,0.9"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def test_report_leads_with_the_verdict_and_flags_a_grid_edge(tmp_path: Path) -> None:
    """The hand-made sweep of tests/study/test_study_verdict.py, imported: nero and lamb win out of the box,
    adam needs 10x its default lr. Without sgd's lr 1 its best lr 0.1 is the top of its grid."""
    from tests.study.test_study_verdict import base_sweep

    url = f"sqlite:///{tmp_path / 'verdict.db'}"
    db.upgrade(url)
    rows = [r for r in base_sweep() if not (r["optimizer"] == "sgd" and r["lr"] == 1.0)]
    results = tmp_path / "verdict.csv"
    results.write_text(_verdict_csv(rows))
    done = runner.invoke(app, ["import", str(results), "--name", "verdict", "--db", url])
    assert done.exit_code == 0, done.output
    sweep_id = done.stdout.strip().splitlines()[-1]
    table = runner.invoke(app, ["report", sweep_id, "--db", url], env={"COLUMNS": "400"})
    assert table.exit_code == 0, table.output
    text = " ".join(table.output.split())
    assert "verdict (T): out-of-the-box winners: nero, lamb" in text
    assert "adam at its default lr (0.001) is behind (regret 0.25); it needs lr 0.01, 10x its default, to match" in text
    assert "T/sgd: best lr at the edge of the grid: widen the grid (best lr 0.1, the highest it ran)" in text
    assert text.index("verdict (T)") < text.index("robustness metrics")
    assert "provisional" not in text  # an imported sweep has finished
    as_json = strict_json(runner.invoke(app, ["report", sweep_id, "--db", url, "--format", "json"]).stdout)
    (task,) = as_json["verdict"]["tasks"]
    assert task["winners"] == ["nero", "lamb"]
    sgd = next(o for o in task["optimizers"] if o["label"] == "sgd")
    assert sgd["edge"] == "high" and sgd["status"] == "behind"


def test_report_prints_the_table_as_latex_or_markdown(tmp_path: Path) -> None:
    from tests.study.test_study_verdict import base_sweep
    from tests.study.test_table_export import markdown_cells, parse_tabular

    url = f"sqlite:///{tmp_path / 'tables.db'}"
    db.upgrade(url)
    results = tmp_path / "tables.csv"
    results.write_text(_verdict_csv(base_sweep()))
    sweep_id = runner.invoke(app, ["import", str(results), "--db", url]).stdout.strip().splitlines()[-1]
    latex = runner.invoke(app, ["report", sweep_id, "--db", url, "--latex"])
    assert latex.exit_code == 0, latex.output
    columns, rows = parse_tabular(latex.stdout)
    assert columns == 6 and rows[1][2] == r"$\mathbf{0.1 \pm 0.005}$"
    markdown = runner.invoke(app, ["report", sweep_id, "--db", url, "--markdown"])
    assert markdown.exit_code == 0, markdown.output
    body = {row[1]: row for row in markdown_cells(markdown.stdout)[2:]}
    assert body["adam"][2] == "**0.101 ± 0.0025**" and body["lamb"][4] == "**0.1035**"
    both = runner.invoke(app, ["report", sweep_id, "--db", url, "--latex", "--markdown"])
    assert both.exit_code == 2 and "Choose one output" in both.output
