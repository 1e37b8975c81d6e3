"""Class-per-folder image data sets (ImageNet's standard layout), decoded with Pillow.

Layout: ``<root>/<class>/<image>``, one sub-folder per class (for ImageNet the WordNet id, e.g.
``n01440764``), classes numbered in sorted order of their folder names, images with a common image
extension (``.JPEG``, ``.jpg``, ``.png``, ...; case ignored) in sorted order. A validation folder uses the
training folder's class numbering.

Transforms are the standard ImageNet ones, written here on Pillow images: training takes a random crop of
8%-100% of the area and aspect ratio 3/4-4/3 resized to ``size`` (bilinear) and a random horizontal flip;
evaluation resizes the shorter side to ``resize`` and takes the centre ``size`` crop. Each sample's
randomness comes from ``(seed, epoch, index)``, so a run is the same whatever the number of loader
workers. Samples are ``uint8 (3, size, size)`` tensors; :class:`NormalizeImages` turns them into the
network's input on the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nero_study.data.batches import minibatch_indices
from nero_study.errors import TaskConfigError

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpeg",
    ".jpg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _pil():  # noqa: ANN202 - the PIL.Image module, imported when first needed
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a dependency
        raise TaskConfigError("Pillow is needed to decode images: pip install pillow") from exc
    return Image


def find_classes(root: Path) -> list[str]:
    """The class folder names under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise TaskConfigError(f"expected a class-per-folder image tree at {root} (set NERO_STUDY_DATA_DIR)")
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


@dataclass(frozen=True)
class ImageFolderIndex:
    """``samples`` are ``(path, class index)`` in class then file-name order; ``classes[i]`` names class i."""

    samples: list[tuple[Path, int]]
    classes: list[str]


def scan_image_folder(
    root: Path,
    classes: Sequence[str] | None = None,
    *,
    max_classes: int | None = None,
    max_per_class: int | None = None,
) -> ImageFolderIndex:
    """Index the images under ``root``.

    ``classes`` fixes the class numbering (a validation folder passes the training folder's classes; a
    folder there that is not among them fails). ``max_classes`` keeps the first classes only,
    ``max_per_class`` the first images of each class (reduced budgets).
    """
    root = Path(root)
    present = find_classes(root)
    if classes is None:
        classes = present
    else:
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise TaskConfigError(
                f"{root} has class folders not in the training set: {', '.join(unknown[:5])}"
            )
    classes = list(classes)[:max_classes]
    if not classes:
        raise TaskConfigError(f"expected class sub-folders with images at {root}")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
        )
        samples.extend((folder / file, label) for file in files[:max_per_class])
    if not samples:
        raise TaskConfigError(
            f"expected images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root}"
        )
    return ImageFolderIndex(samples=samples, classes=classes)


def load_rgb(path: Path):  # noqa: ANN201 - a PIL.Image.Image
    """Decode ``path`` with Pillow into an RGB image."""
    with _pil().open(path) as image:
        return image.convert("RGB")


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a random crop: area fraction in ``scale``, aspect in ``ratio``.

    Ten tries at a uniform area fraction and log-uniform aspect ratio; if none fits, the centre crop of
    the whole image with its aspect ratio clamped into ``ratio`` (the standard Inception-style crop).
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return left, top, left + crop_w, top + crop_h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        crop_w, crop_h = round(height * ratio[1]), height
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return left, top, left + crop_w, top + crop_h


def resize_shorter_side(image, size: int):  # noqa: ANN001, ANN201 - PIL images
    """Resize (bilinear) so that the shorter side is ``size``, keeping the aspect ratio."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    return image.resize((new_w, new_h), _pil().Resampling.BILINEAR)


def center_crop(image, size: int):  # noqa: ANN001, ANN201 - PIL images
    """The centre ``size x size`` crop (the image must be at least that large)."""
    width, height = image.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_uint8_tensor(image) -> torch.Tensor:  # noqa: ANN001 - a PIL image
    """An RGB Pillow image as ``uint8 (3, H, W)``."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(Dataset):
    """Decoded, transformed samples of an :class:`ImageFolderIndex`.

    ``train=True``: random-resized crop to ``size`` and flip, keyed by ``(epoch, index)``; ``train=False``:
    resize the shorter side to ``resize`` and centre-crop ``size``, keyed by ``index``.
    """

    def __init__(
        self, index: ImageFolderIndex, *, train: bool, size: int, resize: int | None = None, seed: int = 0
    ) -> None:
        self.samples = index.samples
        self.classes = index.classes
        self.train = train
        self.size = size
        self.resize = resize if resize is not None else size
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        path, label = self.samples[position]
        image = load_rgb(path)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, position])
            box = random_resized_crop_box(*image.size, rng)
            image = image.resize((self.size, self.size), _pil().Resampling.BILINEAR, box=box)
            if rng.random() < 0.5:
                image = image.transpose(_pil().Transpose.FLIP_LEFT_RIGHT)
        else:
            image = center_crop(resize_shorter_side(image, self.resize), self.size)
        return to_uint8_tensor(image), label


def epoch_loader(
    dataset: ImageFolderDataset,
    *,
    batch_size: int,
    epoch: int,
    generator: torch.Generator | None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader over one epoch: shuffled from ``generator`` (``None``: in order), last batch kept."""
    if generator is None:
        order = [
            list(range(start, min(start + batch_size, len(dataset))))
            for start in range(0, len(dataset), batch_size)
        ]
    else:
        order = [
            index.tolist()
            for index in minibatch_indices(len(dataset), batch_size, generator, drop_last=False)
        ]
    batch_keys = [[(epoch, i) for i in batch] for batch in order]
    return DataLoader(dataset, batch_sampler=batch_keys, num_workers=num_workers, pin_memory=pin_memory)


def iterate_batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images, int64 labels)`` from ``loader``."""
    for images, labels in loader:
        yield images, torch.as_tensor(labels, dtype=torch.long)


class NormalizeImages(nn.Module):
    """``uint8`` (or ``[0, 255]`` float) images to ``(x / 255 - mean) / std`` per channel, on the device."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std
