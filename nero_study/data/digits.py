"""scikit-learn's handwritten digits (1797 real 8x8 grey images, 10 classes), split once and cached.

The images ship inside scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded. They
are read straight from the package's ``digits.csv.gz`` (as ``load_digits`` reads them) without importing
scikit-learn: that import costs 1.5 s of CPU, paid again by every fresh Ray worker of a sweep. The
split is a permutation drawn with the fixed seed :data:`DIGITS_SPLIT_SEED`, independent of any trial's
seed, so every trial of every digits task sees the same 1440 training and 357 test images.

Pixels come as integers 0..16; they are scaled to [0, 1] and then standardised with one mean and one
standard deviation over all training pixels (a scalar, not per pixel: the border pixels are almost
always 0, and a scalar keeps the image's spatial structure for the conv nets and the GAN).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DIGITS_SPLIT_SEED = 20210101
DIGITS_TRAIN_SIZE = 1440
DIGITS_TEST_SIZE = 357
DIGITS_IMAGE_SHAPE = (1, 8, 8)
DIGITS_FEATURES = 64  # pixels per flattened image (the tensors hold images as rows of 64)
DIGITS_CLASSES = 10


@dataclass(frozen=True, eq=False)
class DigitsSplit:
    """The fixed digits split: flat float32 pixels in [0, 1] (N, 64), int64 labels, and the train statistics.

    ``train_x``/``test_x`` are the standardised inputs the classifiers see; ``train_pixels``/``test_pixels``
    are the same images in [0, 1] (the GAN models those). Treat every tensor as read-only: they are shared
    by all trials in the process.
    """

    train_pixels: torch.Tensor
    test_pixels: torch.Tensor
    train_x: torch.Tensor
    test_x: torch.Tensor
    train_y: torch.Tensor
    test_y: torch.Tensor
    mean: float
    std: float

    def standardise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map pixels in [0, 1] to the classifiers' input scale (train mean 0, train std 1)."""
        return (pixels - self.mean) / self.std


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 images (N, 64) as 0..16 and their labels, from scikit-learn's data file."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without running its __init__
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a scikit-learn that keeps the file elsewhere

    bunch = load_digits()
    return np.asarray(bunch.data), np.asarray(bunch.target)


@functools.cache
def load_digits_split() -> DigitsSplit:
    """Load scikit-learn's digits once per process and split them 1440 train / 357 test (fixed seed)."""
    data, target = _read_digits()
    pixels = np.asarray(data, dtype=np.float32) / 16.0
    labels = np.asarray(target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    train_index, test_index = order[:DIGITS_TRAIN_SIZE], order[DIGITS_TRAIN_SIZE:]
    train_pixels = torch.from_numpy(pixels[train_index].copy())
    mean = float(train_pixels.mean())
    std = float(train_pixels.std())
    test_pixels = torch.from_numpy(pixels[test_index].copy())
    return DigitsSplit(
        train_pixels=train_pixels,
        test_pixels=test_pixels,
        train_x=(train_pixels - mean) / std,
        test_x=(test_pixels - mean) / std,
        train_y=torch.from_numpy(labels[train_index].copy()),
        test_y=torch.from_numpy(labels[test_index].copy()),
        mean=mean,
        std=std,
    )
