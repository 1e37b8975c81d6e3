"""The optimiser registry: building every optimiser under both presets, defaults and error messages."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nero_study.errors import UnknownOptimizerError
from nero_study.optim.lamb import Lamb
from nero_study.optim.madam import Madam
from nero_study.optim.nero import Nero
from nero_study.optim.registry import build, get_optimizer, list_optimizers
from nero_study.vocabulary import PRESETS

EXPECTED = {
    "nero": (Nero, 0.01),
    "sgd": (torch.optim.SGD, 0.1),
    "adam": (torch.optim.Adam, 0.001),
    "lamb": (Lamb, 0.01),
    "madam": (Madam, 0.01),
}


def test_registered_optimisers() -> None:
    assert {info.name for info in list_optimizers()} == set(EXPECTED)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_build_every_optimiser_with_both_presets_and_train(name: str, preset: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = build(name, model.parameters(), preset=preset)
    cls, default_lr = EXPECTED[name]
    assert isinstance(optimizer, cls)
    assert optimizer.param_groups[0]["lr"] == default_lr == get_optimizer(name).default_lr
    inputs = torch.randn(32, 4)
    targets = inputs.sum(dim=1, keepdim=True).sin()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_paper_preset_has_no_momentum() -> None:
    params = [nn.Parameter(torch.randn(3, 2))]
    assert build("sgd", params, preset="paper").param_groups[0]["momentum"] == 0
    assert build("adam", params, preset="paper").param_groups[0]["betas"][0] == 0
    assert build("lamb", params, preset="paper").param_groups[0]["betas"][0] == 0
    assert build("adam", params, preset="library").param_groups[0]["betas"] == (0.9, 0.999)


def test_lr_and_overrides_are_applied() -> None:
    params = [nn.Parameter(torch.randn(3, 2))]
    optimizer = build("nero", params, lr=0.3, beta=0.9, constraints="mean")
    group = optimizer.param_groups[0]
    assert (group["lr"], group["beta"], group["constraints"]) == (0.3, 0.9, "mean")
    assert build("lamb", params, betas=[0.5, 0.99]).param_groups[0]["betas"] == (0.5, 0.99)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownOptimizerError) as error:
        build("rmsprop", [nn.Parameter(torch.ones(2))])
    for name in EXPECTED:
        assert name in str(error.value)
    assert "'rmsprop'" in str(error.value)


def test_unknown_override_lists_the_valid_settings() -> None:
    with pytest.raises(ValueError) as error:
        build("nero", [nn.Parameter(torch.ones(2))], momentum=0.9)
    message = str(error.value)
    assert "momentum" in message and "beta" in message and "constraints" in message


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        build("adam", [nn.Parameter(torch.ones(2))], preset="tuned")
    assert "'tuned'" in str(error.value) and "paper" in str(error.value) and "library" in str(error.value)


def test_bad_value_reports_the_optimisers_message() -> None:
    with pytest.raises(ValueError, match="Invalid beta: 1.5"):
        build("nero", [nn.Parameter(torch.ones(2))], beta=1.5)
    with pytest.raises(ValueError, match="Invalid constraints: 'rows'"):
        build("nero", [nn.Parameter(torch.ones(2))], constraints="rows")


def test_every_default_lr_says_where_it_comes_from_and_only_neros_is_the_papers() -> None:
    sources = {info.name: info.default_lr_source for info in list_optimizers()}
    assert all(sources.values())
    assert "paper's out-of-the-box" in sources["nero"]
    # The paper defines an out-of-the-box lr for Nero only (README of jxbz/nero; Algorithm 1).
    assert "project's choice" in sources["lamb"] and "1e-3" in sources["lamb"]
    assert "torch.optim.Adam" in sources["adam"]
    assert all("out-of-the-box lr (" not in source for name, source in sources.items() if name != "nero")
    assert get_optimizer("lamb").describe()["default_lr_source"] == sources["lamb"]


def test_yaml_integer_betas_are_taken_as_floats() -> None:
    # `betas: [0, 0.999]` in a spec: torch's Adam refuses an int beta next to a float one.
    optimizer = build("adam", [nn.Parameter(torch.ones(2))], betas=[0, 0.999])
    assert optimizer.param_groups[0]["betas"] == (0.0, 0.999)


@pytest.mark.parametrize("name", ["lamb", "madam"])
def test_lamb_and_madam_take_the_ablations_constraints_setting(name: str) -> None:
    assert "constraints" in get_optimizer(name).hyperparameters
    params = [nn.Parameter(torch.randn(3, 4))]
    assert build(name, params, constraints="both").param_groups[0]["constraints"] == "both"
    assert build(name, params).param_groups[0]["constraints"] is False  # plain LAMB / Madam by default
    with pytest.raises(ValueError, match="Invalid constraints: 'rows'"):
        build(name, params, constraints="rows")
