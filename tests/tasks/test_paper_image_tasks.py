"""The paper's image tasks: readers of the real on-disk formats, paper settings, smoke runs, missing data.

Every data set is written here, tiny, in its real format (CIFAR-10 python batches, MNIST IDX files byte by
byte, a class-per-folder JPEG/PNG tree, an Inception state-dict file) under a temporary
``NERO_STUDY_DATA_DIR``.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nero_study.data.cifar10 import (
    Augmentation,
    augment,
    load_cifar10,
    random_crop,
    random_flip,
    read_cifar_batch,
)
from nero_study.data.image_folder import (
    ImageFolderDataset,
    NormalizeImages,
    random_resized_crop_box,
    scan_image_folder,
)
from nero_study.data.mnist import load_mnist, read_idx
from nero_study.data.paths import data_dir
from nero_study.tasks import TaskConfigError, TrialContext, TrialSpec, get_task, run_trial
from nero_study.tasks.cifar10_cgan import Discriminator, Generator
from nero_study.tasks.fid import (
    FIDInceptionV3,
    fid_pixels,
    frechet_distance,
    frechet_distance_of_features,
    inception_features,
    load_fid_inception,
)

CIFAR_PER_BATCH = 6
CIFAR_DIR = "cifar-10-batches-py"


def naming(path: Path) -> str:
    """A pattern for an error message that names ``path``."""
    return re.escape(str(path))


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- writers of the real formats -------------------------------------------------------------------------


def write_cifar(root: Path, per_batch: int = CIFAR_PER_BATCH, seed: int = 0) -> dict[str, tuple]:
    """CIFAR-10 python batches as the data set's authors pickle them; returns each file's (data, labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        content = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
        written[name] = (data, labels)
    return written


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An IDX file: 0, 0, type, ndim, big-endian uint32 dims, big-endian values."""
    big_endian = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(big_endian).tobytes()


def write_mnist(
    folder: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = False, seed: int = 0
) -> dict:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        content = idx_bytes(array, 0x08)
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as handle:
                handle.write(content)
        else:
            (folder / name).write_bytes(content)
    return arrays


CLASS_COLOURS = {"n01440764": (200, 30, 30), "n01443537": (30, 200, 30), "n01484850": (30, 30, 200)}


def write_image_tree(root: Path, per_class: int = 3, size: tuple[int, int] = (48, 40)) -> None:
    """imagenet/train and imagenet/val, one folder per WordNet id, JPEG and PNG images of one colour each."""
    for split in ("train", "val"):
        for wnid, colour in CLASS_COLOURS.items():
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                image = Image.new("RGB", size, colour)
                if i % 2:
                    image.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)
                else:
                    image.save(folder / f"{wnid}_{i}.png", format="PNG")
            (folder / "notes.txt").write_text("not an image")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a shared, busy CPU, several spinning threads make these tiny runs crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_inception() -> FIDInceptionV3:
    """A randomly initialised FID Inception-v3 (our architecture) at the smallest input size.

    Convolutions Kaiming-normal (ReLU gain): PyTorch's default layer initialisation shrinks the signal
    through the ~95 layers to ~1e-7, which would make every FID about 0.
    """
    torch.manual_seed(0)
    model = FIDInceptionV3(75)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model.eval()


@pytest.fixture(scope="module")
def inception_weights_file(
    tmp_path_factory: pytest.TempPathFactory, random_inception: FIDInceptionV3
) -> Path:
    """Its state dict saved as a weights file (about 95 MB: the real architecture's size)."""
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05.pth"
    torch.save(random_inception.state_dict(), path)
    return path


@pytest.fixture()
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("NERO_STUDY_DATA_DIR", str(root))
    return root


def smoke(task: str, optimizer: str = "nero", lr: float = 0.01, **options: object) -> TrialSpec:
    return TrialSpec(task=task, optimizer=optimizer, lr=lr, budget="smoke", device="cpu", task_options=options)


@pytest.fixture()
def built_optimizers(monkeypatch: pytest.MonkeyPatch) -> dict[str | None, tuple[int, torch.optim.Optimizer]]:
    """Every optimiser a trial builds, by the network it names: (parameters it got, the optimiser)."""
    built: dict[str | None, tuple[int, torch.optim.Optimizer]] = {}
    original = TrialContext.build_optimizer

    def spy(self: TrialContext, params, network: str | None = None) -> torch.optim.Optimizer:  # noqa: ANN001
        params = list(params)
        optimizer = original(self, params, network)
        built[network] = (sum(p.numel() for p in params), optimizer)
        return optimizer

    monkeypatch.setattr(TrialContext, "build_optimizer", spy)
    return built


def assert_trained(result, steps: int) -> None:  # noqa: ANN001
    assert result.status == "succeeded", result.error
    assert result.curve[0].step == 0
    assert result.curve[-1].step == steps
    assert all(math.isfinite(point.metric) for point in result.curve)
    assert math.isfinite(result.curve[-1].train_loss)


# --- data paths -------------------------------------------------------------------------------------------


def test_data_dir_reads_the_environment_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERO_STUDY_DATA_DIR", str(tmp_path / "a"))
    assert data_dir() == tmp_path / "a"
    monkeypatch.setenv("NERO_STUDY_DATA_DIR", str(tmp_path / "b"))
    assert data_dir() == tmp_path / "b"
    monkeypatch.delenv("NERO_STUDY_DATA_DIR")
    with pytest.raises(TaskConfigError, match="NERO_STUDY_DATA_DIR is not set"):
        data_dir()


# --- CIFAR-10 ---------------------------------------------------------------------------------------------


def test_cifar_batch_reader_returns_planes_labels_and_pixels(data_root: Path) -> None:
    written = write_cifar(data_root)
    data, labels = written["data_batch_3"]
    images, read_labels = read_cifar_batch(data_root / "cifar-10-batches-py" / "data_batch_3")
    assert images.shape == (CIFAR_PER_BATCH, 3, 32, 32) and images.dtype == torch.uint8
    assert read_labels.tolist() == labels and read_labels.dtype == torch.int64
    # Pixel (row r, column c) of plane p is byte p * 1024 + r * 32 + c of the image's row.
    for image, plane, row, col in [(0, 0, 0, 0), (1, 1, 5, 7), (5, 2, 31, 30)]:
        assert int(images[image, plane, row, col]) == int(data[image, plane * 1024 + row * 32 + col])


def test_cifar_loader_concatenates_the_five_batches_in_order_and_limits(data_root: Path) -> None:
    written = write_cifar(data_root)
    split = load_cifar10()
    assert split.train_images.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    expected_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert split.train_labels.tolist() == expected_labels
    assert split.test_labels.tolist() == written["test_batch"][1]
    assert torch.equal(
        split.train_images[CIFAR_PER_BATCH].flatten(), torch.from_numpy(written["data_batch_2"][0][0])
    )
    limited = load_cifar10(train_limit=7, test_limit=2)
    assert len(limited.train_images) == 7 and len(limited.test_labels) == 2


def test_cifar_reader_refuses_pickles_that_would_run_code(data_root: Path) -> None:
    class Exploit:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, ("echo should-not-run",))

    folder = data_root / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(TaskConfigError, match="not allowed"):
        read_cifar_batch(folder / "data_batch_1")


def test_cifar_augmentation_crops_flips_and_keeps_content() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    assert torch.equal(random_crop(images, 0, generator), images)
    cropped = random_crop(images, 2, generator)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    assert cropped.shape == images.shape
    for n in range(2):
        # Each crop is the image shifted by at most 2 pixels, with zeros where the padding shows.
        shifts = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(cropped[n], padded[n][:, 2 + dy : 10 + dy, 2 + dx : 10 + dx])
        ]
        assert len(shifts) == 1
    flipped = random_flip(images.repeat(16, 1, 1, 1), generator)
    was_flipped = [torch.equal(f, images[i % 2].flip(2)) for i, f in enumerate(flipped)]
    kept = [torch.equal(f, images[i % 2]) for i, f in enumerate(flipped)]
    assert all(a or b for a, b in zip(was_flipped, kept, strict=True)) and any(was_flipped) and any(kept)
    unrotated = augment(images, Augmentation(padding=0, flip=False, rotation_degrees=0), generator)
    assert torch.equal(unrotated, images)
    rotated = augment(images, Augmentation(padding=0, flip=False, rotation_degrees=15), generator)
    assert rotated.shape == images.shape and not torch.equal(rotated, images)


# --- MNIST IDX --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_code", "dtype"),
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
def test_idx_reader_decodes_every_type_big_endian(tmp_path: Path, type_code: int, dtype: type) -> None:
    offset = 0 if dtype == np.uint8 else 50  # negative values for the signed types
    array = (np.arange(24).reshape(2, 3, 4) * 7 - offset).astype(dtype)
    path = tmp_path / "values-idx3"
    path.write_bytes(idx_bytes(array, type_code))
    read = read_idx(path)
    assert read.shape == (2, 3, 4)
    assert np.array_equal(read, array)


def test_idx_reader_rejects_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(TaskConfigError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"abc")
    with pytest.raises(TaskConfigError, match="5"):
        read_idx(path)


@pytest.mark.parametrize(("subdir", "gz"), [("", False), ("mnist", True), ("MNIST/raw", False)])
def test_mnist_loader_finds_plain_or_gzip_files_in_each_place(data_root: Path, subdir: str, gz: bool) -> None:
    arrays = write_mnist(data_root / subdir if subdir else data_root, gz=gz)
    split = load_mnist()
    assert split.train_images.shape == (20, 28, 28) and split.test_images.shape == (10, 28, 28)
    assert np.array_equal(split.train_images.numpy(), arrays["train-images-idx3-ubyte"])
    assert split.test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert split.train_labels.dtype == torch.int64


# --- class-per-folder images ------------------------------------------------------------------------------


def test_image_folder_scan_numbers_sorted_classes_and_skips_non_images(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    index = scan_image_folder(tmp_path / "imagenet" / "train")
    assert index.classes == sorted(CLASS_COLOURS)
    assert len(index.samples) == 9
    assert [label for _, label in index.samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(path.suffix in (".JPEG", ".png") for path, _ in index.samples)
    limited = scan_image_folder(tmp_path / "imagenet" / "train", max_classes=2, max_per_class=1)
    assert limited.classes == sorted(CLASS_COLOURS)[:2] and len(limited.samples) == 2


def test_image_folder_validation_must_use_training_classes(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    (tmp_path / "imagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(TaskConfigError, match="n99999999"):
        scan_image_folder(tmp_path / "imagenet" / "val", sorted(CLASS_COLOURS))


def test_image_folder_samples_have_the_size_and_colours_written(tmp_path: Path) -> None:
    write_image_tree(tmp_path)
    index = scan_image_folder(tmp_path / "imagenet" / "val")
    val = ImageFolderDataset(index, train=False, size=24, resize=28)
    for position in (0, 3, 6):  # the first image of each class, a PNG (lossless: exact colours)
        image, label = val[position]
        assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
        colour = CLASS_COLOURS[index.classes[label]]
        assert image[:, 12, 12].tolist() == list(colour)
    train = ImageFolderDataset(index, train=True, size=16, seed=3)
    first, _ = train[(0, 1)]
    again, _ = train[(0, 1)]
    assert first.shape == (3, 16, 16) and torch.equal(first, again)
    jpeg, label = train[(2, 1)]
    assert (jpeg.float().mean(dim=(1, 2)) - torch.tensor(CLASS_COLOURS[index.classes[label]])).abs().max() < 6
    normalized = NormalizeImages()(first[None])
    assert normalized.shape == (1, 3, 16, 16) and normalized.dtype == torch.float32


def test_random_resized_crop_boxes_lie_inside_with_the_allowed_area_and_ratio() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(500, 375, rng)
        width, height = right - left, bottom - top
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        assert 0.07 * 500 * 375 <= width * height <= 500 * 375
        assert 3 / 4 - 0.05 <= width / height <= 4 / 3 + 0.05


# --- FID --------------------------------------------------------------------------------------------------


def scipy_frechet(features1: np.ndarray, features2: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = features1.mean(0), features2.mean(0)
    s1, s2 = np.cov(features1, rowvar=False), np.cov(features2, rowvar=False)
    root = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


@pytest.mark.parametrize(("n1", "n2", "dims"), [(60, 50, 8), (7, 9, 30)])
def test_frechet_distance_agrees_with_the_matrix_square_root_formula(n1: int, n2: int, dims: int) -> None:
    rng = np.random.default_rng(1)
    features1 = rng.normal(size=(n1, dims))
    features2 = rng.normal(loc=0.3, scale=1.5, size=(n2, dims)) @ rng.normal(size=(dims, dims))
    ours = frechet_distance_of_features(torch.from_numpy(features1), torch.from_numpy(features2))
    assert ours == pytest.approx(scipy_frechet(features1, features2), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift() -> None:
    sigma = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    mu = torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert frechet_distance(mu, sigma, mu + torch.tensor([3.0, 4.0]), sigma) == pytest.approx(25.0)
    features = torch.randn(40, 5, dtype=torch.float64)
    assert frechet_distance_of_features(features, features) == pytest.approx(0.0, abs=1e-9)


def test_fid_inception_has_the_real_size_and_gives_2048_features(random_inception: FIDInceptionV3) -> None:
    model = random_inception
    # torchvision's Inception-v3 without auxiliary head and with a 1008-way classifier: 23,850,960.
    assert parameter_count(model) == 23_850_960
    with torch.no_grad():
        features = model(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, 2048) and bool((features >= 0).all())
    with pytest.raises(TaskConfigError, match="at least 75"):
        FIDInceptionV3(74)


def test_fid_in_inception_features_tells_image_distributions_apart(random_inception: FIDInceptionV3) -> None:
    generator = torch.Generator().manual_seed(0)
    noise_a, noise_b = torch.rand(2, 12, 3, 32, 32, generator=generator)
    grey = 0.5 + 0.02 * torch.randn(12, 3, 32, 32, generator=generator)
    features = {
        name: inception_features(random_inception, x)
        for name, x in [("a", noise_a), ("b", noise_b), ("grey", grey)]
    }
    same_kind = frechet_distance_of_features(features["a"], features["b"])
    different = frechet_distance_of_features(features["a"], features["grey"])
    assert 0 < same_kind < different / 10


def test_fid_inception_weights_load_and_mismatches_fail(inception_weights_file: Path, tmp_path: Path) -> None:
    model = load_fid_inception(inception_weights_file, 75)
    saved = torch.load(inception_weights_file, weights_only=True)
    assert torch.equal(model.Mixed_7c.branch_pool.conv.weight, saved["Mixed_7c.branch_pool.conv.weight"])
    assert not model.training
    without_counters = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    torch.save(without_counters, tmp_path / "old.pth")
    load_fid_inception(tmp_path / "old.pth", 75)  # files from old PyTorch lack the BN counters
    broken = dict(saved)
    del broken["Mixed_6b.branch7x7_2.conv.weight"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(TaskConfigError, match="Mixed_6b.branch7x7_2.conv.weight"):
        load_fid_inception(tmp_path / "broken.pth", 75)


def test_fid_pixels_stretch_each_image_and_quantise_to_8_bits() -> None:
    images = torch.stack([torch.full((3, 4, 4), 0.2), torch.linspace(-0.5, 0.5, 48).view(3, 4, 4)])
    pixels = fid_pixels(images, per_image_minmax=True)
    assert pixels[1].min() == 0 and pixels[1].max() == 1
    assert torch.equal(pixels * 255, (pixels * 255).round())
    assert fid_pixels(torch.zeros(1, 3, 2, 2), per_image_minmax=False).unique().tolist() == [
        pytest.approx(128 / 255)
    ]


# --- cifar10-vgg11 ----------------------------------------------------------------------------------------


def test_vgg11_trains_at_smoke_budget_and_is_deterministic(data_root: Path) -> None:
    write_cifar(data_root)
    result = run_trial(smoke("cifar10-vgg11"))
    assert_trained(result, steps=3)
    assert 0 <= result.metric <= 1
    again = run_trial(smoke("cifar10-vgg11"))
    assert [p.to_dict() for p in again.curve] == [p.to_dict() for p in result.curve]


def test_vgg11_missing_data_fails_naming_the_file(data_root: Path) -> None:
    with pytest.raises(TaskConfigError, match=naming(data_root / CIFAR_DIR / "data_batch_1")):
        run_trial(smoke("cifar10-vgg11"))
    write_cifar(data_root)
    (data_root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(TaskConfigError, match=naming(data_root / CIFAR_DIR / "test_batch")):
        run_trial(smoke("cifar10-vgg11"))


# --- cifar10-resnet18 -------------------------------------------------------------------------------------


def test_resnet18_trains_at_smoke_budget_and_bn_gain_reg_enters_the_loss(data_root: Path) -> None:
    write_cifar(data_root)
    plain = run_trial(smoke("cifar10-resnet18"))
    assert_trained(plain, steps=3)
    regularised = run_trial(smoke("cifar10-resnet18", bn_gain_reg=100.0))
    assert_trained(regularised, steps=3)
    assert regularised.curve[-1].train_loss != plain.curve[-1].train_loss
    with pytest.raises(TaskConfigError, match="bn_gain_reg"):
        run_trial(smoke("cifar10-resnet18", bn_gain_reg=-1.0))


def test_resnet18_missing_data_fails_naming_the_file(data_root: Path) -> None:
    with pytest.raises(TaskConfigError, match=naming(data_root / CIFAR_DIR / "data_batch_1")):
        run_trial(smoke("cifar10-resnet18"))


# --- mnist-mlp100 -----------------------------------------------------------------------------------------


def test_mnist_mlp100_trains_at_smoke_budget(data_root: Path) -> None:
    write_mnist(data_root / "mnist", gz=True)
    result = run_trial(smoke("mnist-mlp100"))
    assert_trained(result, steps=3)


def test_mnist_mlp100_adam_runs_with_the_papers_beta1_and_the_trial_records_it(
    data_root: Path, built_optimizers: dict
) -> None:
    write_mnist(data_root / "mnist", gz=True)
    result = run_trial(smoke("mnist-mlp100", optimizer="adam", lr=1e-3))
    assert_trained(result, steps=3)
    (_, optimizer), = built_optimizers.values()
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # mnist/100_layer_mlp.py line 83: Adam(lr)
    assert result.settings == {"model": {"betas": (0.9, 0.999), "eps": 1e-8}}
    assert result.to_dict()["settings"] == {"model": {"betas": [0.9, 0.999], "eps": 1e-8}}


def test_mnist_mlp100_missing_data_fails_naming_the_file(data_root: Path) -> None:
    with pytest.raises(TaskConfigError, match=naming(data_root / "train-images-idx3-ubyte")):
        run_trial(smoke("mnist-mlp100"))


# --- imagenet-resnet50 ------------------------------------------------------------------------------------


def test_imagenet_resnet50_trains_at_smoke_budget(data_root: Path) -> None:
    write_image_tree(data_root)
    result = run_trial(smoke("imagenet-resnet50", bn_gain_reg=0.01))
    assert_trained(result, steps=2)
    assert 0 <= result.metric <= 1


def test_imagenet_resnet50_sgd_has_the_papers_momentum_and_weight_decay(
    data_root: Path, built_optimizers: dict
) -> None:
    write_image_tree(data_root)
    result = run_trial(smoke("imagenet-resnet50", optimizer="sgd", lr=0.1))
    assert_trained(result, steps=2)
    (_, optimizer), = built_optimizers.values()
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 1e-4)  # imagenet/figure4.sh lines 4-6


def test_imagenet_resnet50_missing_data_fails_naming_the_folder(data_root: Path) -> None:
    with pytest.raises(TaskConfigError, match=naming(data_root / "imagenet" / "train")):
        run_trial(smoke("imagenet-resnet50"))


# --- cifar10-cgan -----------------------------------------------------------------------------------------


def test_cgan_trains_at_smoke_budget_with_fid(data_root: Path, inception_weights_file: Path) -> None:
    write_cifar(data_root)
    result = run_trial(smoke("cifar10-cgan", inception_weights=str(inception_weights_file)))
    assert_trained(result, steps=2)
    assert result.metric_name == "fid" and all(point.metric > 0 for point in result.curve)


def test_cgan_gives_each_network_its_own_optimiser_with_the_papers_settings(
    data_root: Path, inception_weights_file: Path, built_optimizers: dict
) -> None:
    write_cifar(data_root)
    spec = smoke("cifar10-cgan", optimizer="adam", lr=2e-4, inception_weights=str(inception_weights_file))
    result = run_trial(spec)
    assert_trained(result, steps=2)
    assert set(built_optimizers) == {"generator", "discriminator"}
    generator_size, generator_optimizer = built_optimizers["generator"]
    discriminator_size, discriminator_optimizer = built_optimizers["discriminator"]
    config = get_task("cifar10-cgan").config("smoke")
    assert generator_size == sum(p.numel() for p in Generator(config.width).parameters())
    assert discriminator_size == sum(p.numel() for p in Discriminator(config.width).parameters())
    # cGAN/main.py lines 137-138: the same lr; betas (0.0, 0.999) for G, (0.9, 0.999) for D.
    assert generator_optimizer.param_groups[0]["betas"] == (0.0, 0.999)
    assert discriminator_optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert generator_optimizer.param_groups[0]["lr"] == discriminator_optimizer.param_groups[0]["lr"] == 2e-4
    assert result.settings["discriminator"]["betas"] == (0.9, 0.999)
    assert result.settings["generator"]["betas"] == (0.0, 0.999)


def test_cgan_finds_the_default_weights_file_in_the_data_dir(
    data_root: Path, inception_weights_file: Path
) -> None:
    write_cifar(data_root)
    (data_root / "pt_inception-2015-12-05.pth").symlink_to(inception_weights_file)
    result = run_trial(smoke("cifar10-cgan", fid_reference="train"))
    assert_trained(result, steps=2)


def test_cgan_missing_data_or_weights_fail_naming_the_file(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=naming(data_root / CIFAR_DIR / "data_batch_1")):
        run_trial(smoke("cifar10-cgan"))
    write_cifar(data_root)
    with pytest.raises(TaskConfigError, match=naming(data_root / "pt_inception-2015-12-05.pth")):
        run_trial(smoke("cifar10-cgan"))
    with pytest.raises(TaskConfigError, match=naming(tmp_path / "nowhere.pth")):
        run_trial(smoke("cifar10-cgan", inception_weights=str(tmp_path / "nowhere.pth")))
    with pytest.raises(TaskConfigError, match="inception_size"):
        run_trial(smoke("cifar10-cgan", inception_size=64))
