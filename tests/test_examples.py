"""The shipped example specs stay valid, and an optimiser variant's label survives the store and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nero_study.cli import app
from nero_study.store import db, repo
from nero_study.study.plan import plan_trials
from nero_study.study.spec import SweepSpec
from nero_study.tasks.runner import run_trial

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spec_is_valid(path: Path) -> None:
    spec = SweepSpec.from_file(path)
    assert 0 < spec.trial_count() <= 100
    for variant in spec.optimizers:
        assert variant.default_lr in spec.grid_for(variant.label)


def test_constraint_ablation_variants_reach_the_optimiser() -> None:
    spec = SweepSpec.from_file(next(p for p in EXAMPLES if p.stem == "constraints-ablation"))
    settings = {item.spec.label: item.spec.hyperparameters for item in plan_trials(spec)}
    assert settings == {
        "nero": {},
        "nero-mean-only": {"constraints": "mean"},
        "nero-norm-only": {"constraints": "norm"},
        "nero-unconstrained": {"constraints": "none"},
    }


def test_a_variant_label_round_trips_through_the_store_and_the_report(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {
            "tasks": ["digits-mlp"],
            "optimizers": [
                "nero",
                {"name": "nero", "label": "nero-unconstrained", "settings": {"constraints": "none"}},
            ],
            "lrs": [0.01],
            "budget": "smoke",
        }
    )
    url = f"sqlite:///{tmp_path / 'variants.db'}"
    db.upgrade(url)
    factory = db.session_factory(db.make_engine(url))
    with factory() as session:
        sweep = repo.create_sweep(session, spec=spec.model_dump(mode="json"), name="variants")[0]
        rows = repo.add_trials(session, sweep_id=sweep.id, trials=[p.to_dict() for p in plan_trials(spec)])
        for row, planned in zip(rows, plan_trials(spec), strict=True):
            repo.record_trial_result(session, trial_id=row.id, result=run_trial(planned.spec))
        trials = repo.list_trials(session, sweep_id=sweep.id)[0]
        stored = {(t.label, t.optimizer, json.dumps(t.hyperparameters)) for t in trials}
    assert stored == {("nero", "nero", "{}"), ("nero-unconstrained", "nero", '{"constraints": "none"}')}
    report = CliRunner().invoke(app, ["report", sweep.id, "--db", url, "--format", "json"])
    assert report.exit_code == 0, report.output
    assert {row["label"] for row in json.loads(report.stdout)["per_optimizer"]} == {"nero", "nero-unconstrained"}


def test_constraint_figure2_runs_the_papers_arms_over_its_fine_grid() -> None:
    """cifar/figure2.sh: Nero (nero / neroabl without --c1 --c2), LAMB (lamb / lambcs) and Madam (madam /
    madamcs) on VGG-11 at lrs 0.01, 0.02, 0.04, 0.06, 0.08, 0.10, seed 0; best lrs repeated with seeds 1, 2."""
    spec = SweepSpec.from_file(next(p for p in EXAMPLES if p.stem == "constraints-figure2"))
    planned = [item.spec for item in plan_trials(spec)]
    arms = {spec_.label: (spec_.optimizer, spec_.hyperparameters) for spec_ in planned}
    assert arms == {
        "nero": ("nero", {}),
        "nero-unconstrained": ("nero", {"constraints": "none"}),
        "lamb": ("lamb", {}),
        "lamb-constrained": ("lamb", {"constraints": "both"}),
        "madam": ("madam", {}),
        "madam-constrained": ("madam", {"constraints": "both"}),
    }
    assert {spec_.lr for spec_ in planned} == {0.01, 0.02, 0.04, 0.06, 0.08, 0.10}
    assert {(spec_.task, spec_.budget, spec_.seed) for spec_ in planned} == {("cifar10-vgg11", "paper", 0)}
    assert spec.protocol == "paper" and spec.seeds == [0, 1, 2]
    proxy = SweepSpec.from_file(next(p for p in EXAMPLES if p.stem == "constraints-lamb-madam"))
    assert {variant.label for variant in proxy.optimizers} == set(arms)
