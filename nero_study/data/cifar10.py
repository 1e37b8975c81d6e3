"""CIFAR-10 in its standard "python version" on-disk format, and the paper's augmentation on tensors.

Layout under the data directory (what the data set's authors distribute as ``cifar-10-python.tar.gz``,
unpacked): ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (10,000 training images each) and
``cifar-10-batches-py/test_batch`` (10,000 test images). Each file is a pickled dict with ``b'data'``, a
``uint8`` array of shape ``(N, 3072)`` holding each image's red, green then blue 32x32 planes row by row,
and ``b'labels'``, a list of ``N`` class ids in ``0..9``. Nothing is downloaded here.

The files are unpickled with an allow-list of the NumPy array constructors (a data file cannot run code).
Augmentation runs batched on the training device: zero-padded random crop, horizontal flip and (the Nero
paper's released code) a random rotation, then per-channel normalisation.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nero_study.data.batches import minibatch_indices
from nero_study.data.paths import data_dir, require_file
from nero_study.errors import TaskConfigError

CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = 10
CIFAR10_IMAGE_SHAPE = (3, 32, 32)
# Per-channel mean and standard deviation used by the Nero paper's CIFAR-10 code (cifar/train.py).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

Batch = tuple[torch.Tensor, torch.Tensor]

# (module, name) pairs a CIFAR batch pickle may reference: NumPy's array reconstruction, nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol-2 pickles written by Python 3 store an array's bytes as a latin-1 string re-encoded here.
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch file")
        # Files written by NumPy 1 name numpy.core, which NumPy 2 keeps only as a deprecated alias.
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


def cifar10_dir(root: Path | None = None) -> Path:
    """``<root>/cifar-10-batches-py``, ``root`` defaulting to the data directory."""
    return (root if root is not None else data_dir("CIFAR-10 (cifar-10-batches-py/)")) / CIFAR10_SUBDIR


def check_cifar10(root: Path | None = None) -> None:
    """Fail at once, naming the first missing batch file and where it was expected."""
    folder = cifar10_dir(root)
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        require_file(folder / name, f"the CIFAR-10 python batch {CIFAR10_SUBDIR}/{name}")


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file as ``(images, labels)``: ``uint8 (N, 3, 32, 32)`` and ``int64 (N,)``."""
    with open(require_file(path, f"the CIFAR-10 python batch {Path(path).name}"), "rb") as handle:
        try:
            content = _ArrayOnlyUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise TaskConfigError(f"{path} is not a CIFAR-10 python batch file: {exc}") from exc
    if not isinstance(content, dict):
        raise TaskConfigError(f"{path} is not a CIFAR-10 python batch file: expected a pickled dict")
    data = content.get(b"data", content.get("data"))
    labels = content.get(b"labels", content.get("labels"))
    if data is None or labels is None:
        raise TaskConfigError(f"{path} is not a CIFAR-10 python batch file: no b'data' / b'labels' entries")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(CIFAR10_IMAGE_SHAPE):
        raise TaskConfigError(
            f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {tuple(data.shape)}"
        )
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.shape != (data.shape[0],):
        raise TaskConfigError(f"{path}: {len(label_array)} labels for {data.shape[0]} images")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= CIFAR10_CLASSES):
        raise TaskConfigError(f"{path}: labels must lie in 0..{CIFAR10_CLASSES - 1}")
    images = torch.from_numpy(data.reshape(-1, *CIFAR10_IMAGE_SHAPE).copy())
    return images, torch.from_numpy(label_array)


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], batch_label: str = "batch") -> None:
    """Write one batch file as the data set's authors pickled theirs (protocol 2, ``bytes`` keys): the
    inverse of :func:`read_cifar_batch`, for generated data in the real format (tests, benchmarks).

    ``images`` is ``uint8`` of shape ``(N, 3072)`` (or ``(N, 3, 32, 32)``), ``labels`` ``N`` ids in ``0..9``.
    """
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    content = {b"batch_label": batch_label.encode(), b"labels": [int(label) for label in labels], b"data": data}
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


@dataclass(frozen=True)
class Cifar10Split:
    """Training and test images (``uint8 (N, 3, 32, 32)``) with their ``int64`` labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_cifar10(
    root: Path | None = None, *, train_limit: int | None = None, test_limit: int | None = None
) -> Cifar10Split:
    """The five training batches (in order) and the test batch; ``*_limit`` keep the first images only."""
    folder = cifar10_dir(root)
    check_cifar10(root)
    parts = [read_cifar_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    train_images = torch.cat([images for images, _ in parts])
    train_labels = torch.cat([labels for _, labels in parts])
    test_images, test_labels = read_cifar_batch(folder / CIFAR10_TEST_FILE)
    return Cifar10Split(
        train_images=train_images[:train_limit],
        train_labels=train_labels[:train_limit],
        test_images=test_images[:test_limit],
        test_labels=test_labels[:test_limit],
    )


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` pixels to ``float32`` in ``[0, 1]``."""
    return images.float().div_(255.0)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD
) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of ``[0, 1]`` images ``(N, C, H, W)``."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


@dataclass(frozen=True)
class Augmentation:
    """Random crop after zero-padding ``padding`` pixels, horizontal flip, rotation by up to ``degrees``."""

    padding: int = 4
    flip: bool = True
    rotation_degrees: float = 0.0


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``padding`` on every side, then cropped back at a random offset."""
    if padding <= 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).permute(0, 2, 3, 1)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(images.device)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)
    batch_index = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch_index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mask = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mask[:, None, None, None], images.flip(3), images)


def random_rotation(images: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated about its centre by an angle uniform in ``[-degrees, degrees]``.

    Nearest-neighbour sampling and zero fill, as torchvision's ``RandomRotation(degrees)`` default.
    """
    if degrees <= 0:
        return images
    n = len(images)
    angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros = torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def augment(images: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Crop, flip, rotate (the paper code's order) ``[0, 1]`` float images ``(N, C, H, W)``."""
    images = random_crop(images, augmentation.padding, generator)
    if augmentation.flip:
        images = random_flip(images, generator)
    return random_rotation(images, augmentation.rotation_degrees, generator)


def augmented_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    augmentation: Augmentation | None,
    mean: tuple[float, ...] = CIFAR10_MEAN,
    std: tuple[float, ...] = CIFAR10_STD,
) -> Callable[[int], Iterator[Batch]]:
    """``epoch -> batches`` of augmented, normalised images, reshuffled each epoch from ``generator``.

    ``images`` are ``uint8`` and may already sit on the training device (augmentation runs there); the
    last, smaller batch of an epoch is kept (``drop_last=False``, as the paper's DataLoader).
    """

    def batches(epoch: int) -> Iterator[Batch]:
        for index in minibatch_indices(len(images), batch_size, generator, drop_last=False):
            index = index.to(images.device)
            x = to_unit_range(images[index])
            if augmentation is not None:
                x = augment(x, augmentation, generator)
            yield normalize(x, mean, std), labels[index]

    return batches


def steps_per_epoch_keep_last(n: int, batch_size: int) -> int:
    """Optimiser steps in an epoch that keeps the last partial batch: ``ceil(n / batch_size)``."""
    return max(1, math.ceil(n / batch_size))
