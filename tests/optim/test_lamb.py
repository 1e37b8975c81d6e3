"""LAMB against steps computed by hand, its fast path against its loop, and torch.optim conventions."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from nero_study.optim.lamb import Lamb


def one_step(weight: list[float], grad: list[float], **settings: float) -> torch.Tensor:
    param = nn.Parameter(torch.tensor(weight, dtype=torch.float64))
    optimizer = Lamb([param], **settings)
    param.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.step()
    return param.detach()


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "fast"])
def test_first_step_by_hand(foreach: bool) -> None:
    # w = [3, 4] (norm 5), g = [1, 2], betas (0.9, 0.999), eps 0, no bias correction:
    # m = [0.1, 0.2], v = [0.001, 0.004], r = m / sqrt(v) = sqrt(10) [1, 1], ||r|| = sqrt(20),
    # trust = 5 / sqrt(20), so w <- w - lr * 5 / sqrt(20) * sqrt(10) [1, 1] = w - lr * 5 / sqrt(2) [1, 1].
    lr = 0.1
    result = one_step([3.0, 4.0], [1.0, 2.0], lr=lr, betas=(0.9, 0.999), eps=0.0, foreach=foreach)
    step = lr * 5 / math.sqrt(2)  # 0.35355339059327373
    torch.testing.assert_close(result, torch.tensor([3 - step, 4 - step], dtype=torch.float64), rtol=0, atol=1e-14)


def test_weight_norm_is_clamped_at_10() -> None:
    # w = [30, 40] (norm 50 -> 10): same r as above, trust = 10 / sqrt(20): w - lr * 10 / sqrt(2) [1, 1].
    result = one_step([30.0, 40.0], [1.0, 2.0], lr=0.1, eps=0.0)
    step = 0.1 * 10 / math.sqrt(2)
    torch.testing.assert_close(result, torch.tensor([30 - step, 40 - step], dtype=torch.float64), rtol=0, atol=1e-13)


def test_zero_weight_uses_trust_ratio_one() -> None:
    # ||w|| = 0 -> trust 1: w <- -lr * sqrt(10) [1, 1].
    result = one_step([0.0, 0.0], [1.0, 2.0], lr=0.1, eps=0.0)
    expected = -0.1 * math.sqrt(10)
    torch.testing.assert_close(result, torch.tensor([expected, expected], dtype=torch.float64), rtol=0, atol=1e-14)


def test_zero_gradient_leaves_weight_alone() -> None:
    result = one_step([3.0, 4.0], [0.0, 0.0], lr=0.1)
    assert torch.equal(result, torch.tensor([3.0, 4.0], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "fast"])
def test_weight_decay_and_eps_without_bias_correction_by_hand(foreach: bool) -> None:
    # w = [3, 4], g = [1, 2], betas (0.9, 0.999), eps 0.01, weight decay 0.5:
    # sqrt(v) = [0.0316227766016838, 0.0632455532033676]
    # r = m / (sqrt(v) + eps) + 0.5 w = [0.1 / 0.0416227766016838 + 1.5, 0.2 / 0.0732455532033676 + 2.0]
    #   = [2.40253073 + 1.5, 2.73054119 + 2.0] = [3.90253073, 4.73054119]; ||r|| = 6.13251711
    # (with bias correction r would be [1/1.0316 + 1.5, 1/1.0158 + 2] and the step would differ).
    r = [0.1 / (math.sqrt(0.001) + 0.01) + 1.5, 0.2 / (math.sqrt(0.004) + 0.01) + 2.0]
    r_norm = math.hypot(*r)
    assert r_norm == pytest.approx(6.13251711, abs=1e-8)
    trust = 5 / r_norm
    lr = 0.1
    result = one_step([3.0, 4.0], [1.0, 2.0], lr=lr, eps=0.01, weight_decay=0.5, foreach=foreach)
    expected = torch.tensor([3 - lr * trust * r[0], 4 - lr * trust * r[1]], dtype=torch.float64)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-14)


def test_second_step_by_hand_with_paper_betas() -> None:
    # Paper preset: betas (0, 0.999), eps 1e-6. Step 1 with g1 = [1, 2], step 2 with g2 = [1, -1].
    param = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    optimizer = Lamb([param], lr=0.1, betas=(0.0, 0.999), eps=1e-6)
    param.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    optimizer.step()
    # m = g1, v = 0.001 g1^2 -> r = g1 / (sqrt(0.001) |g1| + 1e-6)
    r1 = [1 / (math.sqrt(0.001) + 1e-6), 2 / (math.sqrt(0.004) + 1e-6)]
    trust1 = 5 / math.hypot(*r1)
    w1 = [3 - 0.1 * trust1 * r1[0], 4 - 0.1 * trust1 * r1[1]]
    param.grad = torch.tensor([1.0, -1.0], dtype=torch.float64)
    optimizer.step()
    # m = g2, v = 0.999 * 0.001 * g1^2 + 0.001 * g2^2 = [0.001999, 0.004996]
    r2 = [1 / (math.sqrt(0.001999) + 1e-6), -1 / (math.sqrt(0.004996) + 1e-6)]
    trust2 = min(math.hypot(*w1), 10) / math.hypot(*r2)
    w2 = [w1[0] - 0.1 * trust2 * r2[0], w1[1] - 0.1 * trust2 * r2[1]]
    torch.testing.assert_close(param.detach(), torch.tensor(w2, dtype=torch.float64), rtol=0, atol=1e-14)


def test_fast_path_agrees_with_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (8,), (5, 7), (5,), (), (3, 2)]
    loop_params = [nn.Parameter(torch.randn(s, generator=generator, dtype=torch.float64)) for s in shapes]
    with torch.no_grad():
        loop_params[-1].zero_()
    fast_params = [nn.Parameter(p.detach().clone()) for p in loop_params]
    loop = Lamb(loop_params, lr=0.05, weight_decay=0.01, foreach=False)
    fast = Lamb(fast_params, lr=0.05, weight_decay=0.01, foreach=True)
    for _ in range(10):
        for a, b in zip(loop_params, fast_params, strict=True):
            grad = torch.randn(a.shape, generator=generator, dtype=torch.float64)
            a.grad, b.grad = grad.clone(), grad.clone()
        loop.step()
        fast.step()
        for a, b in zip(loop_params, fast_params, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_state_dict_round_trip_and_conventions() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    frozen = nn.Parameter(torch.ones(2))
    optimizer = Lamb(
        [{"params": model[0].parameters(), "lr": 0.02}, {"params": [*model[2].parameters(), frozen]}], lr=0.01
    )
    inputs = torch.randn(6, 4)

    def closure() -> torch.Tensor:
        assert torch.is_grad_enabled()
        optimizer.zero_grad()
        loss = model(inputs).square().mean()
        loss.backward()
        return loss

    for _ in range(3):
        assert optimizer.step(closure) is not None
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    resumed_model = copy.deepcopy(model)
    for _ in range(3):
        optimizer.step(closure)

    buffer.seek(0)
    resumed = Lamb([{"params": resumed_model[0].parameters()}, {"params": [*resumed_model[2].parameters(), frozen]}])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert [g["lr"] for g in resumed.param_groups] == [0.02, 0.01]
    for _ in range(3):
        resumed.zero_grad()
        resumed_model(inputs).square().mean().backward()
        resumed.step()
    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(frozen, torch.ones(2)) and not optimizer.state[frozen]


def test_sparse_gradients_are_refused() -> None:
    embedding = nn.Embedding(10, 4, sparse=True)
    optimizer = Lamb(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


def test_empty_group_is_fine() -> None:
    param = nn.Parameter(torch.ones(3))
    optimizer = Lamb([{"params": []}, {"params": [param]}])
    param.grad = torch.ones(3)
    optimizer.step()
    assert not torch.equal(param, torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
        ({"betas": (-0.1, 0.999)}, "Invalid beta parameter at index 0: -0.1"),
        ({"betas": (0.9,)}, "Invalid betas: (0.9,)"),
        ({"eps": -1e-6}, "Invalid epsilon value: -1e-06"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ],
)
def test_invalid_settings_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        Lamb([nn.Parameter(torch.ones(2))], **kwargs)
    assert message in str(error.value)


# --- the constrained LAMB of the paper's ablation (LambCS) ------------------------------------------------


class ReferenceLambCS:
    """``LambCS`` as the paper's code runs it (``optim/lambcs.py`` in jxbz/nero, used by
    ``cifar/figure2.sh``), one tensor at a time with the trust ratio as a Python float: LAMB's step, then,
    with ``constraints``, every row of a >1-D tensor minus its mean and divided by its norm. Nothing is
    projected before the first step."""

    def __init__(
        self,
        weights: list[torch.Tensor],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        constraints: bool,
    ) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.constraints = constraints
        self.weights = [w.detach().clone() for w in weights]
        self.m = [torch.zeros_like(w) for w in self.weights]
        self.v = [torch.zeros_like(w) for w in self.weights]

    def step(self, grads: list[torch.Tensor]) -> None:
        beta1, beta2 = self.betas
        for k, (w, g) in enumerate(zip(self.weights, grads, strict=True)):
            self.m[k] = beta1 * self.m[k] + (1 - beta1) * g
            self.v[k] = beta2 * self.v[k] + (1 - beta2) * g * g
            weight_norm = min(math.sqrt(float((w * w).sum())), 10.0)
            adam_step = self.m[k] / (torch.sqrt(self.v[k]) + self.eps) + self.weight_decay * w
            adam_norm = math.sqrt(float((adam_step * adam_step).sum()))
            trust = 1.0 if weight_norm == 0 or adam_norm == 0 else weight_norm / adam_norm
            w = w - self.lr * trust * adam_step
            if self.constraints and w.dim() > 1:
                rows = [w[i].reshape(-1) for i in range(w.shape[0])]
                rows = [row - float(row.sum()) / len(row) for row in rows]
                rows = [row / math.sqrt(float(torch.dot(row, row))) for row in rows]
                w = torch.stack(rows).reshape(w.shape)
            self.weights[k] = w


def small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)).double()


def small_batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(4)
    return [
        (
            torch.randn(8, 2, 4, 4, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=generator),
        )
        for _ in range(steps)
    ]


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "fast"])
@pytest.mark.parametrize(("constraints", "projected"), [("both", True), (True, True), ("none", False), (False, False)])
def test_constraints_match_the_papers_lambcs_in_float64_over_30_steps(
    foreach: bool, constraints: bool | str, projected: bool
) -> None:
    model = small_net()
    reference_model = copy.deepcopy(model)
    # cifar/figure2.sh: --optimizer lambcs --momentum 0.0 --beta 0.999 --wd 0.0 (cifar/train.py line 205).
    settings = {"lr": 0.06, "betas": (0.0, 0.999), "eps": 1e-6, "weight_decay": 0.0}
    optimizer = Lamb(model.parameters(), constraints=constraints, foreach=foreach, **settings)
    reference = ReferenceLambCS(list(reference_model.parameters()), constraints=projected, **settings)
    start = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), start, strict=True))  # nothing projected yet
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
        torch.testing.assert_close(rows.mean(dim=1), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-14)
        torch.testing.assert_close(rows.norm(dim=1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-14)
    else:
        assert float(rows.norm(dim=1).sub(1).abs().max()) > 0.1
    assert max(float((p.detach() - s).abs().max()) for p, s in zip(model.parameters(), start, strict=True)) > 0.05


def test_constrained_lamb_batched_form_matches_each_member_alone() -> None:
    from nero_study.optim.batched import BatchedLamb

    lrs = [0.02, 0.1]
    members = [small_net() for _ in lrs]
    stacked = [torch.stack([m.state_dict()[name] for m in members]) for name, _ in members[0].named_parameters()]
    batched = BatchedLamb(
        stacked, torch.tensor(lrs, dtype=torch.float64), {"betas": (0.0, 0.999), "constraints": "both"}
    )
    alone = [
        Lamb(m.parameters(), lr=lr, betas=(0.0, 0.999), constraints="both") for m, lr in zip(members, lrs, strict=True)
    ]
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


def test_invalid_constraints_name_the_bad_value_and_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="Invalid constraints: 'sum'; valid: True, False, 'both'"):
        Lamb([nn.Parameter(torch.ones(2, 2))], constraints="sum")
