"""Every field of a POSTed spec is bounded: a spec past a bound is refused (422, naming the bound) before
anything is built or stored, so no request can cost minutes of CPU or store a sweep that breaks listings."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from nero_study.study import spec as spec_module

TOKEN = "test-token"  # the token of the ``settings`` fixture (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK_SPEC: dict[str, Any] = {
    "name": "quick",
    "tasks": ["digits-mlp"],
    "optimizers": ["nero"],
    "lrs": [0.01],
    "seeds": [0],
    "budget": "smoke",
}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"inner": value}
    return value


def refused(client: TestClient, spec: dict[str, Any]) -> str:
    """POST ``spec``; assert 422 and that no sweep was stored; return the error messages joined."""
    response = client.post("/api/sweeps", json=spec, headers=AUTH)
    assert response.status_code == 422, response.text
    assert client.get("/api/sweeps").json()["total"] == 0
    return " | ".join(error["message"] for error in response.json()["errors"])


@pytest.mark.parametrize(
    ("change", "bound"),
    [
        ({"seeds": [0, 2**31]}, "2147483647"),
        ({"seeds": [2**63]}, "2147483647"),
        ({"resources": {"cpu": 1e308}}, "1024"),
        ({"resources": {"gpu": 1000}}, "64"),
        ({"task_options": {"digits-mlp": nested(254)}}, "nested more than 4 levels"),
        ({"task_options": {"digits-mlp": {"hidden": "x" * 5000}}}, "limit of 4096 bytes"),
        ({"optimizers": [{"name": "nero", "settings": {"beta": nested(40)}}]}, "nested more than 4 levels"),
        ({"bundle_size": 10**6}, "10000"),
        ({"max_concurrency": 10**6}, "10000"),
        ({"optimizers": [{"name": "nero", "label": f"n{i}"} for i in range(65)]}, "at most 64"),
    ],
    ids=["seed-int4", "seed-int8", "cpu", "gpu", "options-depth", "options-size", "settings-depth", "bundle",
         "concurrency", "variants"],
)
def test_spec_past_a_bound_is_refused_naming_the_bound(
    client: TestClient, change: dict[str, Any], bound: str
) -> None:
    assert bound in refused(client, {**QUICK_SPEC, **change})


def test_unknown_task_option_is_refused_with_the_tasks_config_fields(client: TestClient) -> None:
    message = refused(client, {**QUICK_SPEC, "task_options": {"digits-mlp": {"no_such_field": 1}}})

    assert "no_such_field" in message and "'digits-mlp'" in message
    import dataclasses

    from nero_study.tasks.registry import get_task

    fields = [field.name for field in dataclasses.fields(get_task("digits-mlp").budgets["smoke"])]
    assert all(name in message for name in fields)


def test_a_known_task_option_is_accepted(client: TestClient) -> None:
    import dataclasses

    from nero_study.tasks.registry import get_task

    config = get_task("digits-mlp").budgets["smoke"]
    field = dataclasses.fields(config)[0].name
    spec = {**QUICK_SPEC, "task_options": {"digits-mlp": {field: getattr(config, field)}}}
    assert client.post("/api/sweeps", json=spec, headers=AUTH).status_code == 201


class GridBuilt(RuntimeError):
    """Raised by the patched grid builder: a grid was materialised."""


def _no_grid(*args: Any, **kwargs: Any) -> list[float]:
    raise GridBuilt("a log grid was built")


def test_trials_over_the_limit_are_counted_before_any_grid_is_built(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spec_module, "log_grid", _no_grid)
    ten_labels = [{"name": "nero", "label": f"nero-{i}"} for i in range(10)]
    spec = {**QUICK_SPEC, "optimizers": ten_labels, "lrs": {"min": 1e-4, "max": 1.0, "points_per_decade": 1000}}

    message = refused(client, spec)

    # 4 decades at 1000 a decade: 4001 lrs for each of 10 variants; the service limit is 200 (conftest.py).
    assert "at least 40010 trials" in message and "limit of 200" in message


def test_a_grid_past_the_point_limit_is_refused_before_it_is_built(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe of issue 19: 457 bytes that took 13.7 s of CPU to refuse.
    monkeypatch.setattr(spec_module, "log_grid", _no_grid)
    ten_labels = [{"name": "nero", "label": f"nero-{i}"} for i in range(10)]
    spec = {**QUICK_SPEC, "optimizers": ten_labels, "lrs": {"min": 5e-324, "max": 1e308, "points_per_decade": 1000}}

    message = refused(client, spec)

    assert "over the limit of 10000" in message


@pytest.mark.parametrize(
    "lrs",
    [
        {"min": 1e-4, "max": 1.0, "points_per_decade": 7},
        {"min": 1.0, "max": 1.0000001, "points_per_decade": 1},
        {"min": 3e-5, "max": 0.2, "points_per_decade": 1000},
        [0.01, 0.02, 0.01],
    ],
)
@pytest.mark.parametrize("protocol", ["grid", "paper", "tpe"])
def test_the_arithmetic_count_bounds_the_built_count(lrs: Any, protocol: str) -> None:
    spec = spec_module.SweepSpec.model_validate(
        {**QUICK_SPEC, "optimizers": ["nero", "adam", "sgd"], "seeds": [0, 1], "lrs": lrs, "protocol": protocol},
        context={"max_trials_per_sweep": 10**6},
    )
    built = sum(
        len(spec.grid_for(label)) * (2 if protocol == "grid" else 1) + (1 if protocol == "paper" else 0)
        for label in spec.labels
    )
    expected = 3 * spec.tpe_trials if protocol == "tpe" else built
    assert spec.trial_count() == expected
    assert spec.fewest_trials() <= expected
    if isinstance(lrs, dict):
        low, high = spec.lrs.size_bounds()
        assert low <= len(spec.base_grid()) <= high
