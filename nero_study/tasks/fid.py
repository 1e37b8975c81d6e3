"""Fréchet Inception Distance: the FID variant of Inception-v3 and the Fréchet distance of two samples.

FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the 2048-d pool features
of Inception-v3 of real and generated images:
``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

The network is the one of the original TensorFlow FID code as ported to PyTorch by pytorch-fid (the
"FID Inception" weights ``pt_inception-2015-12-05``): torchvision's Inception-v3 layer names and sizes, a
1008-way classifier (unused here), batch-norm epsilon 1e-3, and three differences in the pooling
branches of the Inception blocks: average pools that do not count padding (blocks A, C and the first E)
and a max pool in the last E block. Written here from that description; its state-dict keys match the
pytorch-fid weights file so that the real file loads strictly. Input: images in ``[0, 1]``, resized
(bilinear) to ``input_size`` (299 for the standard FID; 75 is the smallest that runs) and scaled to
``[-1, 1]``.

The trace term is computed without a general matrix square root: from the eigen-decomposition of the
symmetric ``S1^(1/2) S2 S1^(1/2)`` when there are more samples than features, and otherwise as the
nuclear norm of ``A1 A2^T / sqrt((n1 - 1)(n2 - 1))`` (``A`` the centred features), whose singular
values are the square roots of the non-zero eigenvalues of ``S1 S2``. Both run in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nero_study.tasks.base import TaskConfigError

FID_FEATURES = 2048
FID_CLASSES = 1008
STANDARD_INPUT_SIZE = 299
MIN_INPUT_SIZE = 75
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05.pth"
# The name pytorch-fid gives the same file (with a hash suffix); accepted as a fallback.
INCEPTION_WEIGHTS_ALIASES: tuple[str, ...] = ("pt_inception-2015-12-05-6726825d.pth",)


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad_count(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches (64 + 64 + 96 + ``pool_features`` out)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_no_pad_count(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``channels_7x7`` inner width), 768 out."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            double = layer(double)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(_avg_pool_no_pad_count(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3, 7x7-then-strided-3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], 1
        )


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches, 2048 out; ``max_pool`` selects the last block's pooling."""

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad_count(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID; ``forward`` maps ``[0, 1]`` images to 2048-d pool features."""

    def __init__(self, input_size: int = STANDARD_INPUT_SIZE) -> None:
        super().__init__()
        if input_size < MIN_INPUT_SIZE:
            raise TaskConfigError(
                f"Invalid inception_size: {input_size}; Inception-v3 needs at least {MIN_INPUT_SIZE} px"
            )
        self.input_size = input_size
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # The classifier of the weights file; kept so that the file loads strictly, unused by forward.
        self.fc = nn.Linear(FID_FEATURES, FID_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
        )
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def resolve_inception_weights(path: str | Path | None, data_directory: Path | None) -> Path:
    """The weights file: ``path`` if given, else ``<data dir>/pt_inception-2015-12-05.pth`` (or its
    pytorch-fid name with hash suffix). Fails at once naming the expected file when it is missing."""
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise TaskConfigError(f"expected the FID Inception weights (a state_dict file) at {candidate}")
        return candidate
    if data_directory is None:
        raise TaskConfigError(
            f"expected the FID Inception weights {INCEPTION_WEIGHTS_FILE} in NERO_STUDY_DATA_DIR, "
            "which is not set (or give the task option inception_weights)"
        )
    for name in (INCEPTION_WEIGHTS_FILE, *INCEPTION_WEIGHTS_ALIASES):
        if (data_directory / name).is_file():
            return data_directory / name
    raise TaskConfigError(
        "expected the FID Inception weights (a state_dict file) at "
        f"{data_directory / INCEPTION_WEIGHTS_FILE} (set NERO_STUDY_DATA_DIR or the task option "
        "inception_weights)"
    )


def load_fid_inception(path: Path, input_size: int = STANDARD_INPUT_SIZE) -> FIDInceptionV3:
    """The network with the state dict saved at ``path``, in eval mode, on the CPU.

    Every weight of the network must be in the file (``num_batches_tracked`` counters may be absent, as
    in files written by old PyTorch versions); a mismatch fails with the keys concerned. The network is
    built without initialising its weights (nor drawing from the global random generator).
    """
    with torch.device("meta"):
        model = FIDInceptionV3(input_size)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a configuration error
        raise TaskConfigError(f"could not read the FID Inception weights at {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TaskConfigError(f"{path} does not hold a state_dict (a dict of tensors)")
    expected = model.state_dict().keys()
    state = dict(state)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise TaskConfigError(
            f"{path} does not match the FID Inception-v3: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise TaskConfigError(f"{path} does not match the FID Inception-v3: {exc}") from exc
    return model.eval()


@torch.no_grad()
def inception_features(
    model: FIDInceptionV3, images: torch.Tensor, *, batch_size: int = 200, device: torch.device | None = None
) -> torch.Tensor:
    """``float64 (N, 2048)`` features of ``[0, 1]`` images ``(N, 3, H, W)``, on the network's device."""
    device = device or next(model.parameters()).device
    chunks = [
        model(images[start : start + batch_size].to(device, torch.float32)).double()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, FID_FEATURES, dtype=torch.float64, device=device)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (covariances symmetric PSD)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return float(value)


def frechet_distance_of_features(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two samples ``(N, D)`` (unbiased covariances)."""
    if len(features1) < 2 or len(features2) < 2:
        raise ValueError("the Fréchet distance needs at least two samples on each side")
    a1 = features1.double() - features1.double().mean(0)
    a2 = features2.double() - features2.double().mean(0)
    n1, n2, dims = len(a1), len(a2), a1.shape[1]
    if min(n1, n2) >= dims:
        sigma1, sigma2 = a1.T @ a1 / (n1 - 1), a2.T @ a2 / (n2 - 1)
        return frechet_distance(features1.double().mean(0), sigma1, features2.double().mean(0), sigma2)
    mean_term = (features1.double().mean(0) - features2.double().mean(0)).square().sum()
    trace1 = a1.square().sum() / (n1 - 1)
    trace2 = a2.square().sum() / (n2 - 1)
    trace_sqrt = torch.linalg.svdvals(a1 @ a2.T).sum() / math.sqrt((n1 - 1) * (n2 - 1))
    return float(mean_term + trace1 + trace2 - 2 * trace_sqrt)


def fid_pixels(images: torch.Tensor, *, per_image_minmax: bool) -> torch.Tensor:
    """Images as the paper's FID code saw them: in ``[0, 1]``, quantised to 8 bits.

    The paper's code wrote every image, real or generated, to PNG with
    ``torchvision.utils.save_image(..., normalize=True)``, which stretches each image's own minimum and
    maximum to 0 and 1 (``per_image_minmax=True``); otherwise ``[-1, 1]`` images are mapped linearly.
    """
    x = images.detach().float()
    if per_image_minmax:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp(min=1e-5)
    else:
        x = (x + 1) / 2
    return (x * 255 + 0.5).clamp(0, 255).floor() / 255
