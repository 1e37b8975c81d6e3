"""SweepSpec: loading from YAML/JSON, validation messages, per-optimiser grids and the trial limit."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from nero_study.settings import Settings
from nero_study.study.spec import SweepSpec, log_grid
from nero_study.vocabulary import PRESETS

YAML_SPEC = """
name: demo
tasks: [digits-mlp, text-lm]
optimizers:
  - nero
  - adam
  - {name: nero, label: nero-unconstrained, settings: {constraints: false}}
lrs: {min: 1e-4, max: 1, points_per_decade: 1}
seeds: [0, 1, 2]
protocol: paper
budget: smoke
task_options:
  digits-mlp: {epochs: 2}
resources: {cpu: 2, gpu: 0.25}
"""


def minimal(**fields) -> dict:
    return {"tasks": ["digits-mlp"], "optimizers": ["sgd"], "lrs": [0.1], **fields}


def error_text(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        SweepSpec.model_validate(data)
    return str(info.value)


def test_yaml_and_json_files_give_the_same_spec(tmp_path):
    yaml_path = tmp_path / "sweep.yaml"
    yaml_path.write_text(YAML_SPEC)
    from_yaml = SweepSpec.from_file(yaml_path)

    json_path = tmp_path / "sweep.json"
    json_path.write_text(json.dumps(from_yaml.model_dump(mode="json")))
    from_json = SweepSpec.from_file(json_path)

    assert from_json == from_yaml
    assert from_yaml.name == "demo"
    assert from_yaml.labels == ["nero", "adam", "nero-unconstrained"]
    assert from_yaml.variant("nero-unconstrained").settings == {"constraints": False}
    assert from_yaml.protocol == "paper" and from_yaml.budget == "smoke" and from_yaml.seeds == [0, 1, 2]
    assert from_yaml.resources.cpu == 2 and from_yaml.resources.gpu == 0.25
    assert from_yaml.task_options == {"digits-mlp": {"epochs": 2}}


def test_from_text_json_and_defaults():
    spec = SweepSpec.from_text(json.dumps(minimal()), "json")
    assert spec.seeds == [0]
    assert spec.protocol == "grid" and spec.budget == "proxy" and spec.preset == "paper"
    assert spec.execution == "auto" and spec.tpe_trials == 8
    assert spec.resources.cpu == 1 and spec.resources.gpu == 0
    assert spec.max_trials is None  # no cap of the user's own; the service's limit is not stored in the spec
    assert spec.max_concurrency is None and spec.bundle_size is None


def test_yaml_exponent_without_dot_is_read_as_a_number():
    # YAML 1.1 reads "1e-4" as a string; a user writing it expects a number.
    spec = SweepSpec.from_text("tasks: [digits-mlp]\noptimizers: [sgd]\nlrs: [1e-4, 3e-2]\n")
    assert spec.base_grid() == [1e-4, 3e-2]


def test_unknown_file_type_and_syntax_errors(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text("tasks = []")
    with pytest.raises(ValueError, match=r"\.yaml, \.yml, \.json"):
        SweepSpec.from_file(path)
    with pytest.raises(ValueError, match="Invalid JSON spec"):
        SweepSpec.from_text("{tasks: ", "json")
    with pytest.raises(ValueError, match="mapping"):
        SweepSpec.from_text("- a\n- b\n", "yaml")


def test_unknown_task_names_the_field_and_valid_tasks():
    text = error_text(minimal(tasks=["digits-mlp", "foo"]))
    assert "tasks.1" in text
    assert "Unknown task 'foo'; valid: digits-mlp, digits-vgg" in text


def test_unknown_optimizer_names_the_field_and_valid_optimizers():
    text = error_text(minimal(optimizers=["nero", "neroo"]))
    assert "optimizers.1.name" in text
    assert "Unknown optimizer 'neroo'; valid: nero, sgd, adam, lamb" in text


def test_bad_setting_for_a_variant_names_the_variant_and_the_problem():
    text = error_text(minimal(optimizers=[{"name": "sgd", "label": "sgd-bad", "settings": {"momentum": -1}}]))
    assert "optimizers" in text and "'sgd-bad'" in text and "momentum" in text

    text = error_text(minimal(optimizers=[{"name": "sgd", "settings": {"momentun": 0.9}}]))
    assert "momentun" in text and "valid: momentum" in text


def test_lr_must_be_positive():
    text = error_text(minimal(lrs=[0.1, -1]))
    assert "lrs" in text and "lrs[1]" in text and "positive" in text
    text = error_text(minimal(lrs=[0.0]))
    assert "lrs[0]" in text
    text = error_text(minimal(lrs={"min": 0, "max": 1}))
    assert "lrs.range.min" in text and "positive" in text
    text = error_text(minimal(lrs={"min": 1, "max": 0.1}))
    assert "max (0.1) must not be below min (1.0)" in text
    text = error_text(minimal(lrs=[]))
    assert "lrs" in text and "at least one" in text


def test_protocol_typo_lists_the_protocols():
    text = error_text(minimal(protocol="grdi"))
    assert "protocol" in text and "'grid', 'paper', 'tpe' or 'bracket'" in text


def test_extra_field_is_named_with_the_valid_fields():
    text = error_text(minimal(lr=0.1))
    assert "Unknown field(s) 'lr'" in text and "valid: name, tasks" in text and "max_trials" in text
    text = error_text(minimal(optimizers=[{"name": "sgd", "setting": {}}]))
    assert "'setting'" in text and "valid: name, label, settings" in text
    text = error_text(minimal(lrs={"min": 1e-3, "max": 1, "ppd": 2}))
    assert "'ppd'" in text and "points_per_decade" in text


def test_duplicates_and_task_options_and_resources_are_checked():
    assert "Duplicate optimizer label(s) sgd" in error_text(minimal(optimizers=["sgd", "sgd"]))
    assert "Duplicate task" in error_text(minimal(tasks=["digits-mlp", "digits-mlp"]))
    assert "Duplicate seed" in error_text(minimal(seeds=[0, 0]))
    assert "valid: integers from 0 to 2147483647" in error_text(minimal(seeds=[-1]))
    text = error_text(minimal(task_options={"text-lm": {"epochs": 1}}))
    assert "task_options" in text and "'text-lm'" in text and "valid: digits-mlp" in text
    text = error_text(minimal(resources={"gpu": 1.5}))
    assert "resources.gpu" in text and "fraction in [0, 1]" in text
    assert "resources.cpu" in error_text(minimal(resources={"cpu": 0}))
    assert SweepSpec.model_validate(minimal(resources={"gpu": 2})).resources.gpu == 2
    assert "execution" in error_text(minimal(execution="fast"))
    assert "budget" in error_text(minimal(budget="huge"))


def test_preset_names_match_the_optimizer_registry():
    for preset in PRESETS:
        assert SweepSpec.model_validate(minimal(preset=preset)).preset == preset


def test_variant_label_defaults_to_its_name():
    variants = ["adam", {"name": "sgd", "settings": {"momentum": 0.9}}]
    spec = SweepSpec.model_validate(minimal(optimizers=variants))
    assert spec.labels == ["adam", "sgd"]
    assert spec.variant("sgd").settings == {"momentum": 0.9}
    with pytest.raises(ValueError, match="valid: adam, sgd"):
        spec.variant("lamb")


def test_default_lr_is_always_in_each_optimizers_grid():
    spec = SweepSpec.model_validate(minimal(optimizers=["sgd", "adam", "nero"], lrs=[3e-4, 3e-2]))
    assert spec.base_grid() == [3e-4, 3e-2]
    assert spec.grid_for("sgd") == [3e-4, 3e-2, 0.1]  # SGD's default 0.1 added
    assert spec.grid_for("adam") == [3e-4, 1e-3, 3e-2]  # Adam's default 1e-3 added, sorted
    assert spec.grid_for("nero") == [3e-4, 0.01, 3e-2]
    # Already there: not added twice.
    spec = SweepSpec.model_validate(minimal(optimizers=["sgd"], lrs=[1.0, 0.1, 0.01]))
    assert spec.grid_for("sgd") == [0.01, 0.1, 1.0]


def test_log_grid_values_are_exact():
    assert log_grid(1e-4, 1.0, 1) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    spec = SweepSpec.model_validate(minimal(lrs={"min": 1e-4, "max": 1, "points_per_decade": 1}))
    assert spec.base_grid() == [0.0001, 0.001, 0.01, 0.1, 1.0]
    half_decades = log_grid(1e-4, 1.0, 2)
    assert len(half_decades) == 9
    assert half_decades[::2] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert half_decades[1] == 0.000316228  # 10**-3.5 to 6 significant digits
    # A range that is not a whole number of steps keeps both ends: 1e-3..0.5 spans 2.7 decades -> 3 steps.
    uneven = log_grid(1e-3, 0.5, 1)
    assert uneven[0] == 1e-3 and uneven[-1] == 0.5 and len(uneven) == 4
    assert log_grid(0.01, 0.01, 3) == [0.01]


def test_trial_limit_refuses_large_sweeps_with_count_and_limit():
    # 3 tasks x 2 optimisers x 5 lrs x 2 seeds = 60 trials.
    data = {
        "tasks": ["digits-mlp", "digits-vgg", "text-lm"],
        "optimizers": ["sgd", "adam"],
        "lrs": {"min": 1e-4, "max": 1},
        "seeds": [0, 1],
    }
    assert SweepSpec.model_validate({**data, "max_trials": 60}).max_trials == 60
    text = error_text({**data, "max_trials": 59})
    assert "60 trials" in text and "limit of 59" in text
    # The service limit (here 50) caps the spec, and the spec may not raise it.
    with pytest.raises(ValidationError, match="60 trials, over the limit of 50"):
        SweepSpec.model_validate(data, context={"max_trials_per_sweep": 50})
    with pytest.raises(ValueError, match="above the service limit of 5000"):
        SweepSpec.model_validate({**data, "max_trials": 10_000})
    with pytest.raises(ValidationError, match="60 trials"):
        SweepSpec.from_text(json.dumps(data), "json", limit=40)


def test_validation_never_reads_the_environment_the_service_limit_comes_from_the_context(monkeypatch):
    monkeypatch.setenv("NERO_STUDY_MAX_TRIALS_PER_SWEEP", "3")
    four = minimal(seeds=[0, 1, 2, 3])
    assert SweepSpec.model_validate(four).trial_count() == 4  # the default limit (5000), not the environment's
    context = Settings().spec_context()  # what a service started in this environment passes
    with pytest.raises(ValidationError, match="4 trials, over the limit of 3"):
        SweepSpec.model_validate(four, context=context)


def test_a_stored_spec_is_read_back_under_no_service_limit_but_its_own_cap():
    data = minimal(seeds=list(range(10)))
    with pytest.raises(ValidationError, match="over the limit of 5"):
        SweepSpec.model_validate(data, context={"max_trials_per_sweep": 5})
    assert SweepSpec.from_stored(data).trial_count() == 10  # admitted earlier under another limit: it runs
    with pytest.raises(ValidationError, match="over the limit of 9"):
        SweepSpec.from_stored({**data, "max_trials": 9})  # the user's own cap still holds


def test_demo_spec_is_small_and_valid():
    from nero_study.study.spec import demo_spec

    spec = demo_spec()
    assert spec.name and spec.budget == "smoke"
    # 2 tasks x 4 optimisers x 5 lrs (all default lrs are on the 1e-4..1 decade grid) x 1 seed.
    assert spec.trial_count() == 40
    assert SweepSpec.model_validate(spec.model_dump(mode="json")) == spec
