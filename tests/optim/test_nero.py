"""Nero against a float64 reference written straight from the paper's equations, and torch.optim conventions."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from nero_study.optim.nero import Nero

MODES = {
    True: (True, True),
    "both": (True, True),
    "mean": (True, False),
    "norm": (False, True),
    False: (False, False),
    "none": (False, False),
}


class TinyNet(nn.Module):
    """Conv2d, Embedding, LayerNorm and Linear, with zero-initialised biases."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)  # 4x4 images -> (4, 2, 2) = 16 features
        self.embed = nn.Embedding(7, 5)
        self.norm = nn.LayerNorm(21)
        self.head = nn.Linear(21, 3)
        with torch.no_grad():
            self.conv.bias.zero_()
            self.head.bias.zero_()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.conv(images).relu().flatten(1), self.embed(tokens)], dim=1)
        return self.head(self.norm(features))


def make_batches(steps: int, dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        images = torch.randn(8, 2, 4, 4, generator=generator, dtype=dtype)
        tokens = torch.randint(0, 6, (8,), generator=generator)  # embedding row 6 never gets a gradient
        labels = torch.randint(0, 3, (8,), generator=generator)
        batches.append((images, tokens, labels))
    return batches


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    images, tokens, labels = batch
    return nn.functional.cross_entropy(model(images, tokens), labels)


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().to(dtype)


class ReferenceNero:
    """Nero from the paper's equations: one neuron (row) at a time for >1-D tensors, with Python floats for
    the per-neuron scalars; 1-D tensors elementwise. Division and NaN handling as the authors' released code
    (``optim/nero.py``) does it: ``g / sqrt(v_hat)`` is computed as it comes (0/0 and x/NaN give NaN, x/inf
    gives 0, inf/inf NaN) and then every NaN of it is set to 0."""

    def __init__(self, weights: list[torch.Tensor], lr: float, beta: float, center: bool, normalize: bool):
        self.lr, self.beta, self.center, self.normalize = lr, beta, center, normalize
        self.t = 0
        self.weights = [self._project(w.detach().clone()) for w in weights]
        self.scales = []
        for w in self.weights:
            if w.dim() > 1:
                mean_norm = sum(self._norm(w[i].reshape(-1)) for i in range(w.shape[0])) / w.shape[0]
            else:
                mean_norm = float(w.abs().mean())
            self.scales.append(mean_norm if mean_norm != 0 else 0.01)
        self.v = [[0.0] * w.shape[0] if w.dim() > 1 else torch.zeros_like(w) for w in self.weights]

    @staticmethod
    def _norm(x: torch.Tensor) -> float:
        return math.sqrt(float(torch.dot(x, x)))

    def _project_neuron(self, x: torch.Tensor) -> torch.Tensor:
        if self.center:
            x = x - float(x.sum()) / len(x)
        if self.normalize:
            norm = self._norm(x)
            x = x / norm if norm > 0 else x
        return x

    def _project(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() <= 1:
            return w
        return torch.stack([self._project_neuron(w[i].reshape(-1)) for i in range(w.shape[0])]).reshape(w.shape)

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        bias_correction = 1 - self.beta**self.t
        for k, (w, g) in enumerate(zip(self.weights, grads, strict=True)):
            if w.dim() <= 1:  # elementwise, never projected
                self.v[k] = self.beta * self.v[k] + (1 - self.beta) * g**2
                update = g / torch.sqrt(self.v[k] / bias_correction)
                update[torch.isnan(update)] = 0
                self.weights[k] = w - self.lr * self.scales[k] * update
                continue
            new_rows = []
            for i in range(w.shape[0]):
                w_i, g_i = w[i].reshape(-1), g[i].reshape(-1)
                self.v[k][i] = self.beta * self.v[k][i] + (1 - self.beta) * self._norm(g_i) ** 2
                update = g_i / math.sqrt(self.v[k][i] / bias_correction)
                update[torch.isnan(update)] = 0
                new_rows.append(self._project_neuron(w_i - self.lr * self.scales[k] * update))
            self.weights[k] = torch.stack(new_rows).reshape(w.shape)


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x.detach() - y.detach()).abs().max()) for x, y in zip(a, b, strict=True))


PATHS = {"loop": {"foreach": False}, "fast": {"foreach": True, "fused": False}, "fused": {"fused": True}}
"""Nero's three code paths: the per-tensor loop, the foreach fast path and the fused CPU kernel."""


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("constraints", [True, "mean", "norm", "none"])
def test_matches_float64_reference_over_30_steps(path: str, constraints: bool | str) -> None:
    model = make_model()
    reference_model = copy.deepcopy(model)
    center, normalize = MODES[constraints]
    lr, beta = 0.05, 0.99
    reference = ReferenceNero(list(reference_model.parameters()), lr, beta, center, normalize)
    optimizer = Nero(model.parameters(), lr=lr, beta=beta, constraints=constraints, **PATHS[path])
    assert max_difference(list(model.parameters()), reference.weights) <= 1e-10
    start = [p.detach().clone() for p in model.parameters()]

    for batch in make_batches(30):
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()

        with torch.no_grad():
            for param, weight in zip(reference_model.parameters(), reference.weights, strict=True):
                param.copy_(weight)
        reference_model.zero_grad()
        loss_of(reference_model, batch).backward()
        reference.step([p.grad for p in reference_model.parameters()])

        assert max_difference(list(model.parameters()), reference.weights) <= 1e-10

    moved = max_difference(list(model.parameters()), start)
    assert moved > 0.05, "the weights should have moved well beyond the tolerance"
    assert torch.isfinite(model.embed.weight).all()


def test_a_neuron_whose_gradient_stays_zero_does_not_move() -> None:
    model = make_model()
    optimizer = Nero(model.parameters())
    never_used_row = model.embed.weight[6].detach().clone()
    used_row = model.embed.weight[0].detach().clone()
    for batch in make_batches(5):
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()
    # 0/0 -> 0: only the re-projection's rounding touches it.
    torch.testing.assert_close(model.embed.weight[6].detach(), never_used_row, rtol=0, atol=1e-15)
    assert float((model.embed.weight[0].detach() - used_row).abs().max()) > 1e-3


def test_first_steps_of_a_zero_bias_by_hand() -> None:
    bias = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    optimizer = Nero([bias], lr=0.1, beta=0.9)
    # scale = mean |b| = 0, so 0.01. Step 1: v = 0.1 g^2, v_hat = g^2, update = lr * 0.01 * sign(g), 0 for g = 0.
    bias.grad = torch.tensor([2.0, -3.0, 0.0], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(bias.detach(), torch.tensor([-0.001, 0.001, 0.0], dtype=torch.float64))
    # Step 2 with g = [1, 1, 1]: v = 0.9 * 0.1 * g1^2 + 0.1 * 1 = [0.46, 0.91, 0.1], v_hat = v / 0.19.
    bias.grad = torch.ones(3, dtype=torch.float64)
    optimizer.step()
    expected = [
        -0.001 - 0.1 * 0.01 / math.sqrt(0.46 / 0.19),
        0.001 - 0.1 * 0.01 / math.sqrt(0.91 / 0.19),
        -0.1 * 0.01 / math.sqrt(0.1 / 0.19),
    ]
    torch.testing.assert_close(bias.detach(), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_each_neuron_turns_by_about_lr_per_step() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(50, 8, bias=False).double()
    optimizer = Nero(layer.parameters(), lr=0.01)
    before = layer.weight.detach().clone()
    # A gradient orthogonal to each (centred, unit) neuron and itself centred, so no part of the step is undone
    # by the projection: the turn is then atan(lr).
    grad = torch.randn(8, 50, dtype=torch.float64)
    grad -= grad.mean(dim=1, keepdim=True)
    grad -= (grad * before).sum(dim=1, keepdim=True) * before
    layer.weight.grad = grad
    optimizer.step()
    cosines = (layer.weight.detach() * before).sum(dim=1)
    torch.testing.assert_close(torch.arccos(cosines), torch.full((8,), math.atan(0.01), dtype=torch.float64))


def _random_params(dtype: torch.dtype) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(3)
    shapes = [(16, 8, 3, 3), (16,), (10, 20), (10,), (7, 5), (), (5, 1, 4)]
    params = [nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in shapes]
    channels_last = torch.randn(6, 4, 3, 3, generator=generator, dtype=dtype)
    params.append(nn.Parameter(channels_last.to(memory_format=torch.channels_last)))
    params.append(nn.Parameter(torch.zeros(4, 3, dtype=dtype)))  # zero rows: stay finite
    return params


@pytest.mark.parametrize("path", ["fast", "fused"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("constraints", [True, "mean", "norm", False])
def test_fast_path_agrees_with_loop(path: str, dtype: torch.dtype, tolerance: float, constraints: bool | str) -> None:
    loop_params, fast_params = _random_params(dtype), _random_params(dtype)
    loop = Nero(loop_params, lr=0.05, beta=0.9, constraints=constraints, **PATHS["loop"])
    fast = Nero(fast_params, lr=0.05, beta=0.9, constraints=constraints, **PATHS[path])
    generator = torch.Generator().manual_seed(4)
    for step in range(12):
        for a, b in zip(loop_params, fast_params, strict=True):
            grad = torch.randn(a.shape, generator=generator, dtype=dtype)
            if step < 3 and a.dim() > 1:
                grad[0] = 0  # a row with zero gradient (0/0 -> 0)
            a.grad, b.grad = grad.clone(), grad.clone()
        loop.step()
        fast.step()
        assert max_difference(loop_params, fast_params) <= tolerance
        assert all(torch.isfinite(p).all() for p in fast_params)
    assert fast_params[7].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("path", ["fast", "fused"])
def test_fast_path_handles_mixed_dtypes_in_one_group(path: str) -> None:
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.float64)), nn.Parameter(torch.randn(4, 3))]
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    fast = Nero(params, **PATHS[path])
    loop = Nero(reference, **PATHS["loop"])
    for p, q in zip(params, reference, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    fast.step()
    loop.step()
    assert params[1].dtype == torch.float32
    assert max_difference(params, reference) <= 1e-6


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> None:
    for batch in batches:
        optimizer.zero_grad()
        loss_of(model, batch).backward()
        optimizer.step()


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("constraints", [True, "mean", "none"])
def test_state_dict_round_trip_continues_bit_identically(path: str, constraints: bool | str) -> None:
    batches = make_batches(10, torch.float32)
    model = make_model(torch.float32)
    optimizer = Nero(model.parameters(), lr=0.05, constraints=constraints, **PATHS[path])
    _train(model, optimizer, batches[:5])

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    _train(model, optimizer, batches[5:])

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = make_model(torch.float32, seed=123)
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer = Nero(resumed.parameters(), lr=0.05, constraints=constraints, **PATHS[path])
    # Building Nero on weights it trained leaves them exactly as they are.
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, checkpoint["model"][name]), name
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    saved_scales = [state["scale"] for state in checkpoint["optimizer"]["state"].values()]
    loaded_scales = [resumed_optimizer.state[p]["scale"] for p in resumed.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(saved_scales, loaded_scales, strict=True))
    _train(resumed, resumed_optimizer, batches[5:])

    for (name, value), resumed_value in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(value, resumed_value), name
    assert resumed_optimizer.state_dict()["param_groups"][0]["constraints"] == constraints


def test_per_group_lr_and_beta_match_separate_optimisers() -> None:
    grouped = make_model()
    separate = copy.deepcopy(grouped)
    optimizer = Nero(
        [
            {"params": grouped.conv.parameters(), "lr": 0.1, "beta": 0.9},
            {
                "params": list(grouped.embed.parameters())
                + list(grouped.norm.parameters())
                + list(grouped.head.parameters())
            },
        ],
        lr=0.02,
        beta=0.99,
    )
    conv_only = Nero(separate.conv.parameters(), lr=0.1, beta=0.9)
    rest = Nero(
        list(separate.embed.parameters()) + list(separate.norm.parameters()) + list(separate.head.parameters()),
        lr=0.02,
        beta=0.99,
    )
    for batch in make_batches(5):
        for model, optimizers in ((grouped, [optimizer]), (separate, [conv_only, rest])):
            model.zero_grad()
            loss_of(model, batch).backward()
            for opt in optimizers:
                opt.step()
    for a, b in zip(grouped.parameters(), separate.parameters(), strict=True):
        assert torch.equal(a, b)
    groups = optimizer.state_dict()["param_groups"]
    assert (groups[0]["lr"], groups[0]["beta"], groups[1]["lr"], groups[1]["beta"]) == (0.1, 0.9, 0.02, 0.99)


def test_closure_runs_with_grad_enabled_and_its_loss_is_returned() -> None:
    model = make_model()
    optimizer = Nero(model.parameters())
    batch = make_batches(1)[0]
    seen = {}

    def closure() -> torch.Tensor:
        seen["grad_enabled"] = torch.is_grad_enabled()
        optimizer.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        return loss

    before = model.head.weight.detach().clone()
    loss = optimizer.step(closure)
    assert seen["grad_enabled"] is True
    assert loss is not None and loss.requires_grad
    assert not torch.equal(model.head.weight, before)


def test_params_without_grad_are_skipped() -> None:
    model = make_model()
    optimizer = Nero(model.parameters())
    model.head.weight.requires_grad_(False)
    frozen = model.head.weight.detach().clone()
    _train(model, optimizer, make_batches(3))
    assert model.head.weight.grad is None
    assert torch.equal(model.head.weight, frozen)
    assert float(optimizer.state[model.head.weight]["step"]) == 0
    assert float(optimizer.state[model.conv.weight]["step"]) == 3


def test_empty_param_group_is_fine() -> None:
    weight = nn.Parameter(torch.randn(3, 4))
    optimizer = Nero([{"params": [], "lr": 0.5}, {"params": [weight]}])
    weight.grad = torch.randn(3, 4)
    optimizer.step()
    optimizer.add_param_group({"params": []})
    optimizer.step()
    assert len(optimizer.param_groups) == 3
    assert float(optimizer.state[weight]["step"]) == 2


def test_sparse_gradients_are_refused() -> None:
    embedding = nn.Embedding(10, 4, sparse=True)
    optimizer = Nero(embedding.parameters())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -0.1}, "Invalid learning rate: -0.1"),
        ({"lr": float("nan")}, "Invalid learning rate: nan"),
        ({"beta": 1.0}, "Invalid beta: 1.0"),
        ({"beta": -0.5}, "Invalid beta: -0.5"),
        ({"constraints": "centre"}, "Invalid constraints: 'centre'; valid: True, False, 'both', 'mean', 'norm'"),
        ({"constraints": 1}, "Invalid constraints: 1"),
        ({"foreach": "yes"}, "Invalid foreach: 'yes'"),
        ({"fused": 1.5}, "Invalid fused: 1.5"),
        ({"fused": True, "foreach": True}, "foreach=True and fused=True together"),
    ],
)
def test_invalid_settings_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Nero([nn.Parameter(torch.randn(2, 2))], **kwargs)


def test_invalid_setting_in_an_added_group_is_refused() -> None:
    optimizer = Nero([nn.Parameter(torch.randn(2, 2))])
    with pytest.raises(ValueError, match="Invalid beta: 2"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2, 2))], "beta": 2})
    with pytest.raises(ValueError, match="Invalid constraints: 'sideways'"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.randn(2, 2))], "constraints": "sideways"})
    assert len(optimizer.param_groups) == 1


def _neuron_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    matrices = [p.detach().reshape(p.shape[0], -1) for p in model.parameters() if p.dim() > 1]
    means = torch.cat([m.mean(dim=1) for m in matrices])
    norms = torch.cat([m.norm(dim=1) for m in matrices])
    return means, norms


@pytest.mark.parametrize("constraints", [True, "both", "mean", "norm", False, "none"])
def test_each_constraint_mode_keeps_exactly_its_invariants(constraints: bool | str) -> None:
    model = make_model()
    original = copy.deepcopy(model)
    center, normalize = MODES[constraints]
    vectors_before = [p.detach().clone() for p in model.parameters() if p.dim() <= 1]
    optimizer = Nero(model.parameters(), lr=0.05, constraints=constraints)
    if not center and not normalize:
        for a, b in zip(model.parameters(), original.parameters(), strict=True):
            assert torch.equal(a, b), "'none' must not project at construction"
    for a, b in zip([p for p in model.parameters() if p.dim() <= 1], vectors_before, strict=True):
        assert torch.equal(a, b), "1-D tensors are never projected"

    for batch in [None, *make_batches(10)]:
        if batch is not None:
            _train(model, optimizer, [batch])
        means, norms = _neuron_stats(model)
        # Rows are centred iff 'both'/'mean'; unit norm iff 'both'/'norm'.
        assert (means.abs().max() <= 1e-12) == center
        assert ((norms - 1).abs().max() <= 1e-12) == normalize
    assert model.norm.weight.detach().norm() != pytest.approx(1.0), "LayerNorm gain is not constrained"


def test_rebuilding_on_projected_weights_changes_no_bit() -> None:
    for constraints in (True, "mean", "norm"):
        model = make_model(torch.float32)
        optimizer = Nero(model.parameters(), lr=0.1, constraints=constraints)
        _train(model, optimizer, make_batches(4, torch.float32))
        trained = copy.deepcopy(model.state_dict())
        Nero(model.parameters(), constraints=constraints)
        for name, value in model.state_dict().items():
            assert torch.equal(value, trained[name]), (constraints, name)


def test_zero_tensors_stay_finite() -> None:
    weight = nn.Parameter(torch.zeros(2, 2))
    bias = nn.Parameter(torch.zeros(2))
    optimizer = Nero([weight, bias])
    assert float(optimizer.state[weight]["scale"]) == pytest.approx(0.01)
    weight.grad = torch.zeros(2, 2)
    bias.grad = torch.zeros(2)
    optimizer.step()
    assert torch.equal(weight, torch.zeros(2, 2)) and torch.equal(bias, torch.zeros(2))


@pytest.mark.gpu
def test_fast_path_agrees_with_loop_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    cpu_params = _random_params(torch.float64)
    loop_params = [nn.Parameter(p.detach().clone()) for p in cpu_params]
    cuda_params = [nn.Parameter(p.detach().to("cuda")) for p in cpu_params]
    loop = Nero(loop_params, lr=0.05, beta=0.9, foreach=False)
    fast = Nero(cuda_params, lr=0.05, beta=0.9)  # foreach=None picks the fast path on CUDA
    generator = torch.Generator().manual_seed(5)
    for _ in range(10):
        for a, b in zip(loop_params, cuda_params, strict=True):
            grad = torch.randn(a.shape, generator=generator, dtype=torch.float64)
            a.grad, b.grad = grad.clone(), grad.to("cuda")
        loop.step()
        fast.step()
    assert max_difference(loop_params, [p.cpu() for p in cuda_params]) <= 1e-12


# Non-finite gradients. Per tensor (a Linear weight, a conv weight, a bias), neurons 0 and 1 get a NaN and an
# inf element at step 2 and neuron 2 a -inf element at step 4; every other gradient is finite. From then on
# those neurons' v is NaN or inf, so the released code gives them no update at any later step either.
NONFINITE_SHAPES = [(6, 5), (4, 3, 3, 3), (6,)]
NONFINITE_AT = {2: {0: math.nan, 1: math.inf}, 4: {2: -math.inf}}
NONFINITE_STEPS = 6


def _nonfinite_weights() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in NONFINITE_SHAPES]


def _nonfinite_grads(seed: int, poison: bool) -> list[list[torch.Tensor]]:
    """Per step, per tensor: random float64 gradients; with ``poison`` the non-finite elements above."""
    generator = torch.Generator().manual_seed(seed)
    steps = []
    for t in range(1, NONFINITE_STEPS + 1):
        grads = [torch.randn(shape, generator=generator, dtype=torch.float64) for shape in NONFINITE_SHAPES]
        for neuron, value in (NONFINITE_AT.get(t, {}) if poison else {}).items():
            for grad in grads:
                grad.reshape(grad.shape[0], -1)[neuron, -1] = value
        steps.append(grads)
    return steps


def _reference_trajectory(
    weights: list[torch.Tensor], grads: list[list[torch.Tensor]], constraints: bool | str
) -> list[list[torch.Tensor]]:
    """The reference's weights after each step."""
    reference = ReferenceNero(weights, 0.1, 0.9, *MODES[constraints])
    trajectory = []
    for step_grads in grads:
        reference.step([g.clone() for g in step_grads])
        trajectory.append([w.clone() for w in reference.weights])
    return trajectory


def _check_nonfinite_trajectory(
    got: list[list[torch.Tensor]], want: list[list[torch.Tensor]], none: bool, poisoned: bool = True
) -> None:
    for t, (got_step, want_step) in enumerate(zip(got, want, strict=True), start=1):
        assert all(torch.isfinite(w).all() for w in got_step), f"non-finite weights after step {t}"
        assert max_difference(got_step, want_step) <= 1e-10, f"differs from the reference after step {t}"
        for k, (weight, before) in enumerate(zip(got_step, got[t - 2] if t > 1 else got_step, strict=True)):
            frozen = [n for at, bad in NONFINITE_AT.items() if at <= t for n in bad] if poisoned else []
            if t == 1 or not frozen:
                continue
            change = float((weight[frozen] - before[frozen]).abs().max())
            if weight.dim() == 1 or none:
                assert change == 0, f"tensor {k}: a neuron with non-finite v moved at step {t}"
            else:  # re-projected like every neuron, so only the projection's rounding moves it
                assert change <= 1e-15, f"tensor {k}: a neuron with non-finite v moved by {change} at step {t}"
    # The finite neurons did move: the test would notice an optimiser that froze everything.
    assert max_difference(got[-1], got[0]) > 1e-2


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("constraints", [True, "none"])
def test_nonfinite_gradients_freeze_their_neurons_as_the_reference_does(path: str, constraints: bool | str) -> None:
    grads = _nonfinite_grads(12, poison=True)
    want = _reference_trajectory(_nonfinite_weights(), grads, constraints)
    params = [nn.Parameter(w) for w in _nonfinite_weights()]
    params[1].data = params[1].data.to(memory_format=torch.channels_last)  # conv weights as convolutions keep them
    optimizer = Nero(params, lr=0.1, beta=0.9, constraints=constraints, **PATHS[path])
    got = []
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.clone()
        optimizer.step()
        got.append([p.detach().clone() for p in params])
    _check_nonfinite_trajectory(got, want, none=constraints == "none")


@pytest.mark.parametrize("masked", [False, True], ids=["all-live", "one-frozen"])
@pytest.mark.parametrize("constraints", [True, "none"])
def test_nonfinite_gradients_in_the_batched_form_freeze_only_that_members_neurons(
    constraints: bool | str, masked: bool
) -> None:
    """Member 0 gets the non-finite gradients and member 1 finite ones; each follows its own reference. With
    ``masked`` a third member, frozen throughout (so the masked update runs), gets non-finite ones too and
    never moves."""
    from nero_study.optim.batched import BatchedNero

    schedules = [_nonfinite_grads(12, poison=True), _nonfinite_grads(13, poison=False)]
    if masked:
        schedules.append(_nonfinite_grads(14, poison=True))
    members = len(schedules)
    stacked = [torch.stack([w] * members) for w in _nonfinite_weights()]
    lrs = torch.full((members,), 0.1, dtype=torch.float64)
    batched = BatchedNero(stacked, lrs, {"beta": 0.9, "constraints": constraints})
    start = [p.clone() for p in batched.params]
    active = torch.tensor([True, True, False][:members])
    got: list[list[list[torch.Tensor]]] = [[], []]
    for t in range(NONFINITE_STEPS):
        grads = [torch.stack([schedule[t][k] for schedule in schedules]) for k in range(len(NONFINITE_SHAPES))]
        batched.step(grads, active)
        for member in (0, 1):
            got[member].append([p[member].clone() for p in batched.params])
        assert all(torch.isfinite(p).all() for p in batched.params)
    for member in (0, 1):
        want = _reference_trajectory(_nonfinite_weights(), schedules[member], constraints)
        _check_nonfinite_trajectory(got[member], want, none=constraints == "none", poisoned=member == 0)
    if masked:
        assert all(torch.equal(p[2], s[2]) for p, s in zip(batched.params, start, strict=True))


# The fused CPU kernel (nero_study.optim.fused): when it is taken, what it refuses, and threads.


def _count_kernel_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the shape of every tensor the real kernels are called on (they still run)."""
    from nero_study.optim import fused

    calls: list[tuple[int, ...]] = []
    real = fused.nero_step_

    def spy(params: list[torch.Tensor], *args, **kwargs) -> None:
        calls.extend(tuple(param.shape) for param in params)
        real(params, *args, **kwargs)

    monkeypatch.setattr(fused, "nero_step_", spy)
    return calls


def test_the_default_takes_the_kernels_for_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_kernel_calls(monkeypatch)
    model = make_model(torch.float32)
    optimizer = Nero(model.parameters())
    _train(model, optimizer, make_batches(1, torch.float32))
    assert sorted(calls) == sorted(tuple(p.shape) for p in model.parameters())
    calls.clear()
    loop = Nero(model.parameters(), foreach=False)  # an explicit loop stays the loop
    _train(model, loop, make_batches(1, torch.float32))
    fast = Nero(model.parameters(), foreach=True)  # and an explicit foreach the foreach path
    _train(model, fast, make_batches(1, torch.float32))
    assert calls == []


def test_a_group_with_a_dtype_the_kernels_lack_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_kernel_calls(monkeypatch)
    params = [nn.Parameter(torch.randn(4, 6, dtype=torch.bfloat16)), nn.Parameter(torch.randn(5, 3))]
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    optimizer, loop = Nero(params), Nero(reference, foreach=False)
    for p, q in zip(params, reference, strict=True):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    optimizer.step()
    loop.step()
    assert calls == []  # not all its tensors can take the kernels: the whole group takes the fast path
    # Both paths round in bfloat16, in different orders: a few ulps of elements of unit-norm rows (|x| <= 1).
    assert max_difference(params, reference) <= 4 * torch.finfo(torch.bfloat16).eps


def test_fused_true_refuses_a_dtype_it_cannot_run_naming_it() -> None:
    param = nn.Parameter(torch.randn(4, 6, dtype=torch.float16))
    param.grad = torch.ones_like(param)
    optimizer = Nero([param], fused=True)
    with pytest.raises(RuntimeError, match=r"torch.float16 tensor .*torch.float32, torch.float64.*fused=None"):
        optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_kernel_gives_no_update_where_the_squared_gradient_norm_underflows(dtype: torch.dtype) -> None:
    """As the loop: v_hat == 0 (here from a gradient whose squares underflow in v's dtype) is 0/0 -> 0."""
    tiny = torch.finfo(dtype).tiny
    loop_params, fused_params = _random_params(dtype)[2:3], _random_params(dtype)[2:3]
    loop, fused = Nero(loop_params, **PATHS["loop"]), Nero(fused_params, **PATHS["fused"])
    before = fused_params[0].detach().clone()
    for params in (loop_params, fused_params):
        params[0].grad = torch.full(params[0].shape, tiny * 1e-3, dtype=dtype)
    loop.step()
    fused.step()
    assert float(fused.state[fused_params[0]]["exp_avg_sq"].abs().max()) == 0.0
    # Both only re-project the row (their roundings differ: the kernel multiplies by the inverse norm).
    assert max_difference(fused_params, [before]) <= 4 * torch.finfo(dtype).eps
    assert max_difference(loop_params, [before]) <= 4 * torch.finfo(dtype).eps


def test_fused_steps_from_two_threads_at_once_agree_with_steps_one_after_the_other() -> None:
    import threading

    def train(model: nn.Module, barrier: threading.Barrier | None) -> None:
        optimizer = Nero(model.parameters(), lr=0.05, fused=True)
        for batch in make_batches(40):
            optimizer.zero_grad()
            loss_of(model, batch).backward()
            if barrier is not None:
                barrier.wait()  # both threads step at the same moment
            optimizer.step()

    alone = [make_model(seed=seed) for seed in (0, 1)]
    for model in alone:
        train(model, None)
    together = [make_model(seed=seed) for seed in (0, 1)]
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=train, args=(model, barrier)) for model in together]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # float64: torch's own backward may split its reductions differently with two threads at work.
    for a, b in zip(alone, together, strict=True):
        assert max_difference(list(a.parameters()), list(b.parameters())) <= 1e-12


@pytest.mark.parametrize("path", list(PATHS))
def test_empty_tensors_are_stepped_over(path: str) -> None:
    empty = [nn.Parameter(torch.zeros(shape)) for shape in [(0, 3), (3, 0), (0,), (2, 0, 3)]]
    weight = nn.Parameter(torch.randn(3, 4))
    optimizer = Nero([*empty, weight], **PATHS[path])
    for param in [*empty, weight]:
        param.grad = torch.ones_like(param)
    before = weight.detach().clone()
    optimizer.step()
    assert [tuple(p.shape) for p in empty] == [(0, 3), (3, 0), (0,), (2, 0, 3)]
    assert not torch.equal(weight, before) and torch.isfinite(weight).all()


def test_fused_steps_follow_weights_and_state_replaced_between_steps() -> None:
    """The kernels keep views of the weights and state between steps: a weight given new storage
    (``param.data = ...``) and state loaded again (``load_state_dict``) must be what the next step changes."""
    fused_model, loop_model = make_model(), make_model()
    fused = Nero(fused_model.parameters(), lr=0.05, fused=True)
    loop = Nero(loop_model.parameters(), lr=0.05, foreach=False)
    batches = iter(make_batches(9))
    for _ in range(3):
        batch = next(batches)
        _train(fused_model, fused, [batch])
        _train(loop_model, loop, [batch])
    for model in (fused_model, loop_model):
        for param in model.parameters():
            param.data = param.data.clone()
    for _ in range(3):
        batch = next(batches)
        _train(fused_model, fused, [batch])
        _train(loop_model, loop, [batch])
    for optimizer in (fused, loop):
        optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    batch = next(batches)
    _train(fused_model, fused, [batch])
    _train(loop_model, loop, [batch])
    for optimizer in (fused, loop):
        for state in optimizer.state.values():  # state tensors swapped by hand
            for key in ("exp_avg_sq", "step"):
                state[key] = state[key].clone()
    for _ in range(2):
        batch = next(batches)
        _train(fused_model, fused, [batch])
        _train(loop_model, loop, [batch])
    assert max_difference(list(fused_model.parameters()), list(loop_model.parameters())) <= 1e-12
    assert [float(fused.state[p]["step"]) for p in fused_model.parameters()] == [9.0] * 7


@pytest.mark.parametrize("threads", [1, 2])
def test_the_serial_and_the_parallel_kernel_agree_with_the_loop(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """One torch thread takes the serial kernel (no thread pool woken), more the parallel one; both as the loop."""
    from nero_study.optim import fused

    parallel, serial, vectors = fused._kernels()
    used: list[str] = []

    def spy(name: str, kernel):  # noqa: ANN001, ANN202
        def call(*args):  # noqa: ANN002, ANN202
            used.append(name)
            return kernel(*args)

        return call

    monkeypatch.setattr(fused, "_kernels", lambda: (spy("parallel", parallel), spy("serial", serial), vectors))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loop_params, fused_params = _random_params(torch.float64), _random_params(torch.float64)
        loop = Nero(loop_params, lr=0.05, beta=0.9, **PATHS["loop"])
        fused_nero = Nero(fused_params, lr=0.05, beta=0.9, **PATHS["fused"])
        generator = torch.Generator().manual_seed(6)
        for _ in range(5):
            for a, b in zip(loop_params, fused_params, strict=True):
                grad = torch.randn(a.shape, generator=generator, dtype=torch.float64)
                a.grad, b.grad = grad.clone(), grad.clone()
            loop.step()
            fused_nero.step()
    finally:
        torch.set_num_threads(before)
    assert max_difference(loop_params, fused_params) <= 1e-12
    import numba

    parallel_possible = min(threads, numba.config.NUMBA_NUM_THREADS) > 1  # numba's pool: one thread per core
    assert set(used) == {"parallel" if parallel_possible else "serial"} and len(used) == 5
