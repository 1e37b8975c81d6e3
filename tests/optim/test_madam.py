"""Madam against steps computed by hand, its clamp, and torch.optim conventions."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from nero_study.optim.madam import Madam

WEIGHT = [0.5, -0.2, 0.0, 1.0]
GRAD = [1.0, 1.0, 5.0, 0.0]


def test_first_step_by_hand() -> None:
    param = nn.Parameter(torch.tensor(WEIGHT, dtype=torch.float64))
    optimizer = Madam([param], lr=0.1)
    param.grad = torch.tensor(GRAD, dtype=torch.float64)
    optimizer.step()
    # Step 1: v_hat = g^2, so g_normed = sign(g) = [1, 1, 1, 0] (0/0 -> 0).
    # w * exp(-lr * g_normed * sign(w)) = [0.5 e^-0.1, -0.2 e^0.1, 0 (sign 0), 1.0 e^0].
    # Bound 3 * sqrt(mean(w^2)) = 3 * sqrt(0.3225) = 1.7037: nothing clamped.
    expected = [0.5 * math.exp(-0.1), -0.2 * math.exp(0.1), 0.0, 1.0]
    assert expected[:2] == pytest.approx([0.45241871, -0.22103418], abs=1e-8)
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_second_step_by_hand() -> None:
    param = nn.Parameter(torch.tensor([0.5, -0.2], dtype=torch.float64))
    optimizer = Madam([param], lr=0.1, beta=0.9)
    param.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    optimizer.step()
    param.grad = torch.tensor([3.0, -1.0], dtype=torch.float64)
    optimizer.step()
    # v = 0.9 * 0.1 * 1 + 0.1 * g2^2 = [0.99, 0.19]; v_hat = v / (1 - 0.81) = [5.2105, 1.0]
    # g_normed = [3 / sqrt(0.99 / 0.19), -1 / sqrt(0.19 / 0.19)] = [1.31426, -1]
    g_normed = [3 / math.sqrt(0.99 / 0.19), -1.0]
    expected = [0.5 * math.exp(-0.1) * math.exp(-0.1 * g_normed[0]), -0.2 * math.exp(0.1) * math.exp(-0.1)]
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_weights_are_clamped_to_p_scale_times_initial_rms() -> None:
    param = nn.Parameter(torch.tensor(WEIGHT, dtype=torch.float64))
    optimizer = Madam([param], lr=0.1, p_scale=1.0)
    # Bound = 1 * sqrt(0.3225) = 0.5678908345800274: the 1.0 weight (zero gradient) is clamped to it, and
    # 0.5 * e^0.1 = 0.5526 stays below it.
    param.grad = torch.tensor([-1.0, 1.0, 5.0, 0.0], dtype=torch.float64)
    optimizer.step()
    bound = math.sqrt(0.3225)
    expected = [0.5 * math.exp(0.1), -0.2 * math.exp(0.1), 0.0, bound]
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    for _ in range(5):
        param.grad = torch.tensor([-1.0, 1.0, 5.0, -1.0], dtype=torch.float64)
        optimizer.step()
    assert float(param.detach().abs().max()) == pytest.approx(bound, abs=1e-15)
    assert float(param.detach()[0]) == pytest.approx(bound, abs=1e-15)


def test_normalised_gradient_is_clamped_to_g_bound() -> None:
    param = nn.Parameter(torch.tensor([0.5, -0.2], dtype=torch.float64))
    optimizer = Madam([param], lr=0.1, g_bound=0.5)
    param.grad = torch.tensor([2.0, 2.0], dtype=torch.float64)  # g_normed = 1, clamped to 0.5
    optimizer.step()
    expected = [0.5 * math.exp(-0.05), -0.2 * math.exp(0.05)]
    torch.testing.assert_close(param.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_zero_tensor_bound_and_weights() -> None:
    param = nn.Parameter(torch.zeros(3))
    optimizer = Madam([param], p_scale=2.0)
    assert float(optimizer.state[param]["max"]) == pytest.approx(0.02)
    param.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(param, torch.zeros(3))


def test_state_dict_round_trip_continues_bit_identically() -> None:
    generator = torch.Generator().manual_seed(0)
    param = nn.Parameter(torch.randn(4, 3, generator=generator))
    grads = [torch.randn(4, 3, generator=generator) for _ in range(6)]
    optimizer = Madam([param], lr=0.05)
    for grad in grads[:3]:
        param.grad = grad
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    resumed_param = nn.Parameter(param.detach().clone())
    for grad in grads[3:]:
        param.grad = grad
        optimizer.step()
    buffer.seek(0)
    resumed = Madam([resumed_param], lr=0.05)  # records a bound from the moved weights ...
    resumed.load_state_dict(torch.load(buffer, weights_only=True))  # ... which the saved one overrides
    for grad in grads[3:]:
        resumed_param.grad = grad
        resumed.step()
    assert torch.equal(param, resumed_param)


def test_closure_and_params_without_grad() -> None:
    weight = nn.Parameter(torch.tensor([0.5, 0.25]))
    idle = nn.Parameter(torch.tensor([1.0]))
    optimizer = Madam([weight, idle])

    def closure() -> torch.Tensor:
        assert torch.is_grad_enabled()
        optimizer.zero_grad()
        loss = weight.sum()
        loss.backward()
        return loss

    assert optimizer.step(closure) is not None
    assert torch.equal(idle, torch.tensor([1.0])) and float(optimizer.state[idle]["step"]) == 0
    assert float(weight.detach()[0]) < 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"beta": 1.5}, "Invalid beta: 1.5"),
        ({"p_scale": 0.0}, "Invalid p_scale: 0.0"),
        ({"g_bound": -1.0}, "Invalid g_bound: -1.0"),
    ],
)
def test_invalid_settings_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        Madam([nn.Parameter(torch.ones(2))], **kwargs)
    assert message in str(error.value)


# --- the constrained Madam of the paper's ablation (MadamCS) ----------------------------------------------


class ReferenceMadamCS:
    """``MadamCS`` as the paper's code runs it (``optim/madamcs.py`` in jxbz/nero, run by
    ``cifar/figure2.sh``): the bound ``max = 3 * rms`` of each tensor as first seen, beta 0.999, the
    multiplicative step, the clamp, then with ``constraints`` every row of a >1-D tensor minus its mean and
    divided by its norm. Nothing is projected before the first step."""

    def __init__(self, weights: list[torch.Tensor], lr: float, constraints: bool) -> None:
        self.lr, self.constraints = lr, constraints
        self.weights = [w.detach().clone() for w in weights]
        self.max = [3.0 * math.sqrt(float((w * w).mean())) for w in self.weights]
        self.v = [torch.zeros_like(w) for w in self.weights]
        self.t = 0

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        bias_correction = 1 - 0.999**self.t
        for k, (w, g) in enumerate(zip(self.weights, grads, strict=True)):
            self.v[k] = 0.999 * self.v[k] + 0.001 * g**2
            g_normed = g / torch.sqrt(self.v[k] / bias_correction)
            g_normed = torch.nan_to_num(g_normed, nan=0.0).clamp(-10.0, 10.0)
            w = (w * torch.exp(-self.lr * g_normed * torch.sign(w))).clamp(-self.max[k], self.max[k])
            if self.constraints and w.dim() > 1:
                rows = [w[i].reshape(-1) for i in range(w.shape[0])]
                rows = [row - float(row.sum()) / len(row) for row in rows]
                rows = [row / math.sqrt(float(torch.dot(row, row))) for row in rows]
                w = torch.stack(rows).reshape(w.shape)
            self.weights[k] = w


def small_net() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)).double()


def small_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(6)
    return [
        (
            torch.randn(8, 2, 4, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=generator),
        )
        for _ in range(steps)
    ]


@pytest.mark.parametrize(("constraints", "projected"), [("both", True), (True, True), ("none", False), (False, False)])
def test_constraints_match_the_papers_madamcs_in_float64_over_30_steps(
    constraints: bool | str, projected: bool
) -> None:
    import copy

    model = small_net()
    reference_model = copy.deepcopy(model)
    # cifar/figure2.sh: --optimizer madamcs, i.e. MadamCS(lr, constraints=True) (cifar/train.py line 214).
    optimizer = Madam(model.parameters(), lr=0.06, constraints=constraints)
    reference = ReferenceMadamCS(list(reference_model.parameters()), lr=0.06, constraints=projected)
    start = [p.detach().clone() for p in model.parameters()]
    for inputs, labels in small_batches(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        with torch.no_grad():
            for param, weight in zip(reference_model.parameters(), reference.weights, strict=True):
                param.copy_(weight)
        reference_model.zero_grad()
        nn.functional.cross_entropy(reference_model(inputs), labels).backward()
        reference.step([p.grad for p in reference_model.parameters()])
        for param, weight in zip(model.parameters(), reference.weights, strict=True):
            torch.testing.assert_close(param.detach(), weight, rtol=1e-10, atol=1e-12)
    rows = model[3].weight.detach()
    if projected:
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-14)
    else:
        assert float(rows.norm(dim=1).sub(1).abs().max()) > 0.1
    assert max(float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start, strict=True)) > 0.05


def test_constrained_madam_batched_form_matches_each_member_alone() -> None:
    from nero_study.optim.batched import BatchedMadam

    lrs = [0.02, 0.1]
    members = [small_net() for _ in lrs]
    stacked = [torch.stack([m.state_dict()[name] for m in members]) for name, _ in members[0].named_parameters()]
    batched = BatchedMadam(stacked, torch.tensor(lrs, dtype=torch.float64), {"constraints": "both"})
    alone = [Madam(m.parameters(), lr=lr, constraints="both") for m, lr in zip(members, lrs, strict=True)]
    for inputs, labels in small_batches(10):
        grads = []
        for model, optimizer in zip(members, alone, strict=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            optimizer.step()
        batched.step(
            [torch.stack(per_member) for per_member in zip(*grads, strict=True)], torch.ones(2, dtype=torch.bool)
        )
    for index, model in enumerate(members):
        for stacked_param, param in zip(batched.params, model.parameters(), strict=True):
            torch.testing.assert_close(stacked_param[index], param.detach(), rtol=1e-10, atol=1e-12)


def test_invalid_constraints_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="Invalid constraints: 'sum'"):
        Madam([nn.Parameter(torch.ones(2, 2))], constraints="sum")
