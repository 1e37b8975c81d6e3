"""MNIST in its standard IDX files (LeCun, Cortes & Burges), plain or gzip-compressed.

Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally with a ``.gz`` suffix. They are looked for, in this order,
directly in the data directory, in ``<data dir>/mnist/`` and in ``<data dir>/MNIST/raw/`` (where
torchvision keeps its copy); the first folder that holds all four is used.

IDX format: two zero bytes, a type byte (``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), a byte giving the number of dimensions, one
big-endian ``uint32`` per dimension, then the values in big-endian, row-major order.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nero_study.data.paths import data_dir
from nero_study.errors import TaskConfigError

MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_SUBDIRS: tuple[str, ...] = ("", "mnist", "MNIST/raw")
MNIST_CLASSES = 10
# The mean and standard deviation of MNIST's training pixels, as used by the Nero paper's MLP code.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in IDX file ``path`` (``.gz`` files are decompressed), in native byte order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        content = handle.read()
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise TaskConfigError(f"{path} is not an IDX file (it must start with two zero bytes)")
    type_code, ndim = content[2], content[3]
    if type_code not in IDX_DTYPES:
        raise TaskConfigError(f"{path}: unknown IDX type byte {type_code:#04x}")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise TaskConfigError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) - header != expected:
        raise TaskConfigError(
            f"{path}: IDX header says shape {tuple(shape)} ({expected} bytes) "
            f"but {len(content) - header} bytes follow"
        )
    array = np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def mnist_files(root: Path | None = None) -> dict[str, Path]:
    """The four IDX files, from the first of the searched folders that holds all of them.

    Fails with the files expected and the folders searched when none does.
    """
    root = root if root is not None else data_dir("MNIST's IDX files")
    for subdir in MNIST_SUBDIRS:
        folder = root / subdir if subdir else root
        found = {key: _find(folder, name) for key, name in MNIST_FILES.items()}
        if all(path is not None for path in found.values()):
            return {key: path for key, path in found.items() if path is not None}
    searched = ", ".join(str(root / subdir) if subdir else str(root) for subdir in MNIST_SUBDIRS)
    names = ", ".join(MNIST_FILES.values())
    raise TaskConfigError(
        f"expected MNIST's IDX files {names} (optionally .gz) at {root / MNIST_FILES['train_images']} "
        f"and beside it; searched {searched} (set NERO_STUDY_DATA_DIR)"
    )


@dataclass(frozen=True)
class MnistSplit:
    """``uint8 (N, 28, 28)`` images and ``int64 (N,)`` labels for the 60,000/10,000 split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_mnist(
    root: Path | None = None, *, train_limit: int | None = None, test_limit: int | None = None
) -> MnistSplit:
    """Read the four IDX files; ``*_limit`` keep the first images only."""
    files = mnist_files(root)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise TaskConfigError(
                f"MNIST {split}: expected images (N, rows, cols) and N labels, got shapes "
                f"{images.shape} and {labels.shape} from {files[f'{split}_images']}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= MNIST_CLASSES):
            raise TaskConfigError(f"MNIST {split}: labels must lie in 0..{MNIST_CLASSES - 1}")

    def images(key: str, limit: int | None) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.uint8))[:limit]

    def labels(key: str, limit: int | None) -> torch.Tensor:
        return torch.from_numpy(arrays[key].astype(np.int64))[:limit]

    return MnistSplit(
        train_images=images("train_images", train_limit),
        train_labels=labels("train_labels", train_limit),
        test_images=images("test_images", test_limit),
        test_labels=labels("test_labels", test_limit),
    )


def flatten_normalized(images: torch.Tensor) -> torch.Tensor:
    """``uint8 (N, 28, 28)`` to ``float32 (N, 784)``: ``(x / 255 - 0.1307) / 0.3081``."""
    return (images.reshape(len(images), -1).float() / 255.0 - MNIST_MEAN) / MNIST_STD
