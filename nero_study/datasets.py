"""Fetch the paper tasks' data sets from their canonical sources, verified, into the layout the loaders read.

The catalogue (:data:`CATALOGUE`) holds, per data set, the files to download (URLs tried in order, size in
bytes, checksum and where that checksum was published), how each is unpacked and where each unpacked file
goes under the data directory (``NERO_STUDY_DATA_DIR``), plus a check that runs the loaders' own checks
on that directory. :data:`TASK_DATA` maps every registered task to the data sets it reads.

Checksums are the ones their publishers print; none is made up here:

- CIFAR-10 python tarball: SHA-256 from Keras (``keras/src/datasets/cifar10.py``, ``file_hash``), the same
  value with the size in bytes in Hugging Face ``datasets`` (``datasets/cifar10/dataset_infos.json``).
- MNIST's four IDX ``.gz`` files: sizes and SHA-256 from TensorFlow Datasets
  (``tensorflow_datasets/url_checksums/mnist.txt``, for Google's CVDF mirror, tried first).
- WikiText-2 (tokens, ``wikitext-2-v1.zip``): size and SHA-256 from Hugging Face ``datasets``
  (``datasets/wikitext/dataset_infos.json``, for the original S3 address, which no longer serves it; the
  author's own mirror is tried first, and what it serves is checked against that digest).
- Multi30k de-en ``training.tar.gz`` / ``validation.tar.gz``: SHA-256 from torchtext
  (``torchtext/datasets/multi30k.py``, ``hash_type="sha256"``); no size is published, so none is checked.
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: only the first 8 hex digits of its SHA-256 are
  published, in the file name (torch.hub's ``check_hash`` naming convention); those are checked, and the
  full SHA-256 computed is printed.

A data set that needs a licence or a login (ImageNet) is not downloaded: ``fetch`` prints how to get it and
checks the layout. Downloads go to ``<data dir>/.downloads/<file>.part``, resume with HTTP ``Range`` after
an interrupted transfer (also in a later run), and are renamed only once verified; unpacked files are
written to a temporary name beside their target and renamed into place, so no half-written file is ever at
a path a loader reads. A file that fails its checksum is deleted and the error names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import httpx

from nero_study.errors import TaskConfigError

if TYPE_CHECKING:
    from rich.console import Console

DOWNLOADS_SUBDIR = ".downloads"
CHUNK_BYTES = 1 << 20
# Some mirrors refuse the default user agents of HTTP libraries (WikiText's answers 403 to them).
USER_AGENT = "Mozilla/5.0 (compatible; nero-study data fetch)"

ChecksumAlgorithm = Literal["sha256", "sha256-prefix"]
Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total bytes or None)


class DataFetchError(RuntimeError):
    """A download or an unpack failed; the message names the file, the source and what was wrong."""


@dataclass(frozen=True)
class Checksum:
    """A published checksum: ``algorithm`` and hex ``value`` as published by ``source``.

    ``sha256-prefix`` checks that the file's SHA-256 starts with ``value`` (a name's hash suffix).
    """

    algorithm: ChecksumAlgorithm
    value: str
    source: str

    def matches(self, sha256: str) -> bool:
        """Whether a file whose SHA-256 is ``sha256`` (hex) satisfies this checksum."""
        if self.algorithm == "sha256-prefix":
            return sha256.lower().startswith(self.value.lower())
        return sha256.lower() == self.value.lower()

    def describe(self) -> str:
        return f"SHA-256 starting {self.value}" if self.algorithm == "sha256-prefix" else f"SHA-256 {self.value}"


@dataclass(frozen=True)
class Extract:
    """One file out of a download: ``member`` inside the archive (matched on its last path components,
    so ``train.de`` finds ``./train.de`` or ``data/train.de``; ignored when the download is not an
    archive) written to ``target``, a path relative to the data directory."""

    member: str
    target: str


@dataclass(frozen=True)
class Download:
    """One file to fetch: tried from ``urls`` in order, checked against ``size`` (bytes; ``None`` where
    none is published) and ``checksum`` (``None``: unverified, the SHA-256 computed is printed), then
    unpacked by ``unpack`` (``none``: the file itself is the single extract's target; ``tar``: any tar,
    compressed or not; ``zip``) into ``extracts``."""

    filename: str
    urls: tuple[str, ...]
    size: int | None
    checksum: Checksum | None
    unpack: Literal["none", "tar", "zip"]
    extracts: tuple[Extract, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(extract.target for extract in self.extracts)


@dataclass(frozen=True)
class DataSet:
    """A data set of the catalogue. ``check(root)`` raises :class:`TaskConfigError` naming what is
    missing under ``root`` (it runs the loaders' own checks). ``manual`` says how to get a data set that
    cannot be downloaded here (licence or login); ``packaged`` data ships with an installed package."""

    name: str
    description: str
    check: Callable[[Path], None]
    downloads: tuple[Download, ...] = ()
    manual: str | None = None
    packaged: bool = False
    layout: tuple[str, ...] = field(default=())

    @property
    def expected_layout(self) -> tuple[str, ...]:
        return self.layout or tuple(target for download in self.downloads for target in download.targets)


@dataclass
class FetchReport:
    """What ``fetch`` did for one data set: ``status`` is ``fetched``, ``present`` (nothing downloaded),
    ``manual`` (not downloadable here; ``missing`` says whether its layout is incomplete) or ``packaged``."""

    dataset: str
    status: Literal["fetched", "present", "manual", "packaged"]
    files: list[str] = field(default_factory=list)
    missing: str | None = None


# --- the loaders' checks, on an explicit root -------------------------------------------------------------


def _check_cifar10(root: Path) -> None:
    from nero_study.data.cifar10 import check_cifar10

    check_cifar10(root)


def _check_mnist(root: Path) -> None:
    from nero_study.data.mnist import mnist_files

    mnist_files(root)


def _check_wikitext2(root: Path) -> None:
    from nero_study.data.paths import require_file
    from nero_study.data.wikitext import wikitext2_files

    for path in wikitext2_files(root).values():
        require_file(path, "a WikiText-2 token file")


def _check_multi30k(root: Path) -> None:
    from nero_study.data.parallel_text import multi30k_files
    from nero_study.data.paths import require_file

    for source, target in multi30k_files(root).values():
        require_file(source, "a Multi30k German text file")
        require_file(target, "a Multi30k English text file")


def _check_fid_inception(root: Path) -> None:
    from nero_study.tasks.fid import resolve_inception_weights

    resolve_inception_weights(None, root)


def _check_imagenet(root: Path) -> None:
    from nero_study.data.image_folder import find_classes
    from nero_study.data.paths import require_dir

    for split in ("train", "val"):
        folder = require_dir(root / "imagenet" / split, f"the ImageNet folder imagenet/{split}/<wnid>/*.JPEG")
        if not find_classes(folder):
            raise TaskConfigError(
                f"expected one class folder per WordNet id (imagenet/{split}/<wnid>/*.JPEG) at {folder}"
            )


def _check_pong_rom(root: Path) -> None:
    from nero_study.tasks.atari import rom_available

    if not rom_available("pong"):
        raise TaskConfigError("expected the Pong ROM from ale-py (pip install 'ale-py>=0.11', which ships it)")


def _check_module(module: str, what: str) -> Callable[[Path], None]:
    def check(root: Path) -> None:
        if importlib.util.find_spec(module) is None:
            raise TaskConfigError(f"expected {what} from the package {module}, which is not installed")

    return check


# --- the catalogue ------------------------------------------------------------------------------------------

_KERAS_CIFAR10 = "keras-team/keras keras/src/datasets/cifar10.py (file_hash)"
_HF_CIFAR10 = "huggingface/datasets datasets/cifar10/dataset_infos.json (num_bytes, checksum)"
_TFDS_MNIST = "tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt (size, SHA-256)"
_HF_WIKITEXT = "huggingface/datasets datasets/wikitext/dataset_infos.json (num_bytes, checksum of wikitext-2-v1.zip)"
_TORCHTEXT_MULTI30K = "pytorch/text torchtext/datasets/multi30k.py (hash_type sha256)"
_PYTORCH_FID = (
    "mseitzer/pytorch-fid src/pytorch_fid/inception.py FID_WEIGHTS_URL: the name's suffix 6726825d is the "
    "start of the file's SHA-256 (torch.hub check_hash naming); no full digest or size is published"
)

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

MNIST_ARCHIVES: dict[str, tuple[int, str]] = {
    # file -> (bytes, SHA-256), both from TensorFlow Datasets' url_checksums/mnist.txt
    "train-images-idx3-ubyte.gz": (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # the address TFDS published the checksums for
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
)

IMAGENET_INSTRUCTIONS = """\
ImageNet (ILSVRC2012) needs an account and acceptance of its terms of access, so it is not downloaded here.
1. Register at https://image-net.org/download.php, accept the terms, and from the ILSVRC 2012 page download
   ILSVRC2012_img_train.tar (about 138 GB) and ILSVRC2012_img_val.tar (about 6.3 GB).
2. Training: unpack ILSVRC2012_img_train.tar into <data dir>/imagenet/train/; it holds one tar per class
   (n01440764.tar, ...); unpack each into a folder of its own name (imagenet/train/n01440764/*.JPEG).
3. Validation: unpack ILSVRC2012_img_val.tar and move each image into imagenet/val/<wnid>/, using the
   ground-truth labels of the ILSVRC2012 development kit (the same layout as training).
Then `nero-study data check imagenet-resnet50` checks the layout."""

CATALOGUE: dict[str, DataSet] = {
    "cifar10": DataSet(
        name="cifar10",
        description="CIFAR-10, python version (Krizhevsky 2009)",
        check=_check_cifar10,
        downloads=(
            Download(
                filename="cifar-10-python.tar.gz",
                urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                size=170498071,
                checksum=Checksum(
                    "sha256",
                    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                    f"{_KERAS_CIFAR10}; {_HF_CIFAR10}",
                ),
                unpack="tar",
                extracts=tuple(
                    Extract(f"cifar-10-batches-py/{name}", f"cifar-10-batches-py/{name}")
                    for name in (*CIFAR10_TRAIN_BATCHES, "test_batch", "batches.meta")
                ),
            ),
        ),
    ),
    "mnist": DataSet(
        name="mnist",
        description="MNIST IDX files (LeCun, Cortes & Burges)",
        check=_check_mnist,
        downloads=tuple(
            Download(
                filename=name,
                urls=tuple(mirror + name for mirror in MNIST_MIRRORS),
                size=size,
                checksum=Checksum("sha256", sha256, _TFDS_MNIST),
                unpack="none",
                extracts=(Extract("", f"mnist/{name}"),),
            )
            for name, (size, sha256) in MNIST_ARCHIVES.items()
        ),
    ),
    "wikitext2": DataSet(
        name="wikitext2",
        description="WikiText-2, word-level tokens (Merity et al. 2016)",
        check=_check_wikitext2,
        downloads=(
            Download(
                filename="wikitext-2-v1.zip",
                urls=(
                    "https://wikitext.smerity.com/wikitext-2-v1.zip",  # the author's mirror
                    "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",  # the original
                ),
                size=4475746,
                checksum=Checksum(
                    "sha256", "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c", _HF_WIKITEXT
                ),
                unpack="zip",
                extracts=tuple(
                    Extract(f"wikitext-2/wiki.{split}.tokens", f"wikitext-2/wiki.{split}.tokens")
                    for split in ("train", "valid", "test")
                ),
            ),
        ),
    ),
    "multi30k": DataSet(
        name="multi30k",
        description="Multi30k de-en, WMT16 multimodal task 1 (Elliott et al. 2016)",
        check=_check_multi30k,
        downloads=tuple(
            Download(
                filename=f"{archive}.tar.gz",
                urls=(
                    # The WMT16 host below no longer serves these files; PyTorch's translation tutorial uses
                    # this copy with torchtext's digests.
                    f"https://raw.githubusercontent.com/neychev/small_DL_repo/master/datasets/Multi30k/{archive}.tar.gz",
                    f"http://www.quest.dcs.shef.ac.uk/wmt16_files_mmt/{archive}.tar.gz",
                ),
                size=None,
                checksum=Checksum("sha256", sha256, _TORCHTEXT_MULTI30K),
                unpack="tar",
                extracts=tuple(Extract(f"{split}.{lang}", f"multi30k/{split}.{lang}") for lang in ("de", "en")),
            )
            for archive, split, sha256 in (
                ("training", "train", "20140d013d05dd9a72dfde46478663ba05737ce983f478f960c1123c6671be5e"),
                ("validation", "val", "a7aa20e9ebd5ba5adce7909498b94410996040857154dab029851af3a866da8c"),
            )
        ),
    ),
    "fid-inception": DataSet(
        name="fid-inception",
        description="FID Inception-v3 weights ported by pytorch-fid (for cifar10-cgan's FID)",
        check=_check_fid_inception,
        downloads=(
            Download(
                filename="pt_inception-2015-12-05-6726825d.pth",
                urls=(
                    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                    "pt_inception-2015-12-05-6726825d.pth",
                ),
                size=None,
                checksum=Checksum("sha256-prefix", "6726825d", _PYTORCH_FID),
                unpack="none",
                extracts=(Extract("", "pt_inception-2015-12-05.pth"),),
            ),
        ),
    ),
    "imagenet": DataSet(
        name="imagenet",
        description="ImageNet ILSVRC2012 (licence and login required)",
        check=_check_imagenet,
        manual=IMAGENET_INSTRUCTIONS,
        layout=("imagenet/train/<wnid>/*.JPEG", "imagenet/val/<wnid>/*.JPEG"),
    ),
    "pong-rom": DataSet(
        name="pong-rom",
        description="the Atari Pong ROM, shipped with ale-py",
        check=_check_pong_rom,
        packaged=True,
        layout=("(inside the ale-py package)",),
    ),
    "sklearn-digits": DataSet(
        name="sklearn-digits",
        description="scikit-learn's handwritten digits, shipped with scikit-learn",
        check=_check_module("sklearn", "the digits data"),
        packaged=True,
        layout=("(inside the scikit-learn package)",),
    ),
    "pydoc-topics": DataSet(
        name="pydoc-topics",
        description="Python's pydoc topic texts, shipped with Python",
        check=_check_module("pydoc_data", "the pydoc topic texts"),
        packaged=True,
        layout=("(inside Python's standard library)",),
    ),
}

# Every registered task -> the data sets it reads (seq2seq and ppo-cartpole generate or simulate theirs).
TASK_DATA: dict[str, tuple[str, ...]] = {
    "digits-mlp": ("sklearn-digits",),
    "digits-vgg": ("sklearn-digits",),
    "digits-resnet": ("sklearn-digits",),
    "digits-deep-mlp": ("sklearn-digits",),
    "digits-gan": ("sklearn-digits",),
    "text-lm": ("pydoc-topics",),
    "seq2seq": (),
    "ppo-cartpole": (),
    "cifar10-vgg11": ("cifar10",),
    "cifar10-resnet18": ("cifar10",),
    "wikitext2-transformer": ("wikitext2",),
    "translation-transformer": ("multi30k",),
    "cifar10-cgan": ("cifar10", "fid-inception"),
    "ppo-pong": ("pong-rom",),
    "mnist-mlp100": ("mnist",),
    "imagenet-resnet50": ("imagenet",),
}


def resolve_targets(target: str) -> list[str]:
    """Task name, data set name or ``all`` -> the data set names, in catalogue order."""
    if target == "all":
        wanted = {name for names in TASK_DATA.values() for name in names}
    elif target in TASK_DATA:
        wanted = set(TASK_DATA[target])
    elif target in CATALOGUE:
        wanted = {target}
    else:
        raise ValueError(
            f"Unknown task or data set {target!r}; valid: all, {', '.join(TASK_DATA)}, {', '.join(CATALOGUE)}"
        )
    return [name for name in CATALOGUE if name in wanted]


def resolve_root(directory: str | Path | None) -> Path:
    """``directory`` if given, else the data directory of the settings (``NERO_STUDY_DATA_DIR``)."""
    if directory is not None:
        return Path(directory).expanduser()
    from nero_study.settings import Settings

    configured = Settings().data_dir
    if configured is None:
        raise ValueError("No data directory: pass --dir DIR or set NERO_STUDY_DATA_DIR")
    return Path(configured).expanduser()


def missing_reason(dataset: DataSet, root: Path) -> str | None:
    """None when the loaders accept ``dataset`` under ``root``, else what they say is missing."""
    try:
        dataset.check(root)
    except (TaskConfigError, FileNotFoundError) as exc:
        return str(exc)
    return None


# --- downloading ----------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """The SHA-256 (lower-case hex) of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[len("bytes ") :].split("-", 1)[0])
    except ValueError:
        return None


def _expected_total(response: httpx.Response) -> int | None:
    """The whole file's size in bytes as the server states it, if it does."""
    if response.status_code == 206:
        total = response.headers.get("content-range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _transfer(client: httpx.Client, url: str, download: Download, part: Path, progress: Progress | None) -> None:
    """Download ``url`` into ``part``, resuming from its current length; raises on an interrupted
    transfer (``httpx.HTTPError``) with what was received kept in ``part``."""
    offset = part.stat().st_size if part.exists() else 0
    if download.size is not None and offset > download.size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416 and offset:  # nothing after offset: the part may be complete
            return
        response.raise_for_status()
        if response.status_code == 206:
            start = _content_range_start(response.headers.get("content-range"))
            if start != offset:
                raise DataFetchError(
                    f"{download.filename}: {url} answered a resume at byte {offset} with bytes from {start}"
                )
            mode = "ab"
        else:  # 200: the server sent the whole file (no resume support)
            offset, mode = 0, "wb"
        total = _expected_total(response)
        if download.size is not None and total is not None and total != download.size:
            raise DataFetchError(
                f"{download.filename}: {url} offers {total} bytes but the file has {download.size}; not downloaded"
            )
        received = offset
        with open(part, mode) as handle:
            for chunk in response.iter_raw():  # as received: a drop keeps every byte so far
                handle.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(download.filename, received, total if total is not None else download.size)


def _verify(download: Download, path: Path, url: str, log: Log) -> None:
    """Check size and checksum of the downloaded ``path``; a mismatch deletes it and raises."""
    size = path.stat().st_size
    sha256 = file_sha256(path)
    problem = None
    if download.size is not None and size != download.size:
        problem = f"size mismatch for {download.filename} from {url}: {size} bytes, expected {download.size}"
    elif download.checksum is not None and not download.checksum.matches(sha256):
        problem = (
            f"checksum mismatch for {download.filename} from {url}: SHA-256 {sha256}, "
            f"expected {download.checksum.describe()}"
        )
    if problem is not None:
        path.unlink(missing_ok=True)
        raise DataFetchError(f"{problem}; deleted it")
    if download.checksum is None:
        log(
            f"warning: {download.filename} is unverified (no published checksum); "
            f"its SHA-256 is {sha256} ({size} bytes)"
        )
    elif download.checksum.algorithm == "sha256-prefix":
        log(
            f"{download.filename}: verified the published SHA-256 prefix {download.checksum.value}; "
            f"full SHA-256 {sha256} ({size} bytes)"
        )
    else:
        log(f"{download.filename}: {size} bytes, {download.checksum.describe()} verified")


def download_file(
    download: Download,
    downloads_dir: Path,
    *,
    client: httpx.Client,
    log: Log,
    progress: Progress | None = None,
    attempts_per_url: int = 3,
) -> Path:
    """Fetch ``download`` into ``downloads_dir`` (resuming a ``.part`` file left there), verify it and
    return the verified file's path. Each URL is tried ``attempts_per_url`` times, each try resuming."""
    downloads_dir.mkdir(parents=True, exist_ok=True)
    final = downloads_dir / download.filename
    part = downloads_dir / f"{download.filename}.part"
    if final.exists():  # verified earlier but not unpacked (an interrupted run): check it again
        try:
            _verify(download, final, str(final), log)
            return final
        except DataFetchError:
            pass
    problems: list[str] = []
    for url in download.urls:
        for _ in range(attempts_per_url):
            kept = part.stat().st_size if part.exists() else 0
            log(f"{download.filename}: {f'resuming at byte {kept}' if kept else 'downloading'} from {url}")
            try:
                _transfer(client, url, download, part, progress)
            except httpx.HTTPStatusError as exc:
                problems.append(f"{url}: HTTP {exc.response.status_code}")
                break  # this URL will not serve it: the next one
            except httpx.HTTPError as exc:
                kept = part.stat().st_size if part.exists() else 0
                problems.append(f"{url}: {type(exc).__name__}: {exc} (kept {kept} bytes to resume)")
                log(f"{download.filename}: transfer interrupted after {kept} bytes ({type(exc).__name__}: {exc})")
                continue
            except DataFetchError as exc:
                problems.append(str(exc))
                break
            try:
                _verify(download, part, url, log)
            except DataFetchError as exc:
                problems.append(str(exc))
                if kept:  # the bytes kept from before may be what is wrong: once more, from the start
                    log(f"{download.filename}: did not verify after resuming at byte {kept}; downloading it again")
                    continue
                break
            os.replace(part, final)
            return final
    raise DataFetchError(f"could not fetch {download.filename}:\n  " + "\n  ".join(problems))


# --- unpacking -------------------------------------------------------------------------------------------------


def _member_matches(name: str, member: str) -> bool:
    """Whether the archive member ``name`` is ``member`` or ends with ``/member`` (``./`` prefixes ignored)."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name == member or name.endswith("/" + member)


def _write_atomically(source: IO[bytes], target: Path) -> None:
    """Copy ``source`` to a temporary file beside ``target``, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                handle.write(chunk)
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def unpack(download: Download, archive: Path, root: Path) -> list[Path]:
    """Write ``download``'s extracts from the verified ``archive`` to their targets under ``root``.

    Only the catalogue's members are read (by name; nothing else in the archive is written anywhere).
    ``none``: the file is renamed to its target.
    """
    if download.unpack == "none":
        (extract,) = download.extracts
        target = root / extract.target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(archive, target)
        return [target]
    written: list[Path] = []
    if download.unpack == "tar":
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            for extract in download.extracts:
                found = next((m for m in members if _member_matches(m.name, extract.member)), None)
                if found is None:
                    raise DataFetchError(f"{download.filename} has no member {extract.member}")
                source = tar.extractfile(found)
                assert source is not None  # a regular file
                with source:
                    _write_atomically(source, root / extract.target)
                written.append(root / extract.target)
    else:
        with zipfile.ZipFile(archive) as zipped:
            names = [info.filename for info in zipped.infolist() if not info.is_dir()]
            for extract in download.extracts:
                found_name = next((n for n in names if _member_matches(n, extract.member)), None)
                if found_name is None:
                    raise DataFetchError(f"{download.filename} has no member {extract.member}")
                with zipped.open(found_name) as source:
                    _write_atomically(source, root / extract.target)
                written.append(root / extract.target)
    archive.unlink()
    return written


# --- the commands' logic ------------------------------------------------------------------------------------------


def fetch_dataset(
    dataset: DataSet,
    root: Path,
    *,
    client: httpx.Client,
    log: Log,
    progress: Progress | None = None,
    force: bool = False,
) -> FetchReport:
    """Bring ``dataset`` into ``root``: download what is missing (or everything, with ``force``)."""
    if dataset.packaged:
        return FetchReport(dataset.name, "packaged", missing=missing_reason(dataset, root))
    if dataset.manual is not None:
        return FetchReport(dataset.name, "manual", missing=missing_reason(dataset, root))
    if not force and missing_reason(dataset, root) is None:
        return FetchReport(dataset.name, "present")
    fetched: list[str] = []
    for download in dataset.downloads:
        if not force and all((root / target).is_file() for target in download.targets):
            continue
        archive = download_file(download, root / DOWNLOADS_SUBDIR, client=client, log=log, progress=progress)
        try:
            written = unpack(download, archive, root)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
            archive.unlink(missing_ok=True)  # useless as it is: the next run downloads it again
            raise DataFetchError(f"could not unpack {download.filename} from {download.urls}: {exc}") from exc
        fetched += [str(path.relative_to(root)) for path in written]
    still_missing = missing_reason(dataset, root)
    if still_missing is not None:
        raise DataFetchError(f"{dataset.name}: fetched, but the loader still finds something missing: {still_missing}")
    return FetchReport(dataset.name, "fetched" if fetched else "present", files=fetched)


def fetch(
    target: str,
    root: Path,
    *,
    catalogue: Mapping[str, DataSet] | None = None,
    client: httpx.Client | None = None,
    log: Log = print,
    progress: Progress | None = None,
    force: bool = False,
) -> list[FetchReport]:
    """Fetch the data sets of ``target`` (a task, a data set name or ``all``) into ``root``.

    Raises :class:`DataFetchError` at the first data set that cannot be fetched, after the ones before it.
    """
    catalogue = CATALOGUE if catalogue is None else catalogue
    names = resolve_targets(target)
    own_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))
    try:
        return [
            fetch_dataset(catalogue[name], root, client=client, log=log, progress=progress, force=force)
            for name in names
        ]
    finally:
        if own_client:
            client.close()


@dataclass(frozen=True)
class CheckRow:
    """One line of ``data check``: a task, one of its data sets and whether the loaders accept it."""

    task: str
    dataset: str
    present: bool
    state: str
    detail: str


def check(target: str, root: Path, *, catalogue: Mapping[str, DataSet] | None = None) -> list[CheckRow]:
    """Per task of ``target`` (a task, a data set or ``all``), each of its data sets: present or what is missing."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    wanted = set(resolve_targets(target))
    tasks = [target] if target in TASK_DATA else list(TASK_DATA)
    results: dict[str, str | None] = {name: missing_reason(catalogue[name], root) for name in wanted}
    rows: list[CheckRow] = []
    for task in tasks:
        if target == "all" and not TASK_DATA[task]:
            rows.append(CheckRow(task, "-", True, "nothing to fetch", "generated or simulated: nothing to fetch"))
        for name in (name for name in TASK_DATA[task] if name in wanted):
            reason, dataset = results[name], catalogue[name]
            if reason is None:
                state = "present (in a package)" if dataset.packaged else "present"
                rows.append(CheckRow(task, name, True, state, state))
            elif dataset.manual is not None:
                how = f"licence required; `nero-study data fetch {name}` says how to get it"
                rows.append(CheckRow(task, name, False, "missing", f"{reason} ({how})"))
            else:
                rows.append(CheckRow(task, name, False, "missing", f"{reason} (`nero-study data fetch {name}`)"))
    return rows


def describe_sources(names: Iterable[str], catalogue: Mapping[str, DataSet] | None = None) -> list[str]:
    """Human lines: each download's first URL, size and checksum with its source (or "unverified")."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    lines: list[str] = []
    for name in names:
        for download in catalogue[name].downloads:
            size = f"{download.size} bytes" if download.size is not None else "size not published"
            checksum = (
                f"{download.checksum.describe()} (published by {download.checksum.source})"
                if download.checksum is not None
                else "unverified (no published checksum)"
            )
            lines.append(f"{download.filename}: {download.urls[0]}, {size}, {checksum}")
    return lines


# --- the `nero-study data` commands (typer wrappers in nero_study/cli.py) -------------------------------------


def fetch_command(target: str, directory: str | None, *, force: bool, console: Console) -> int:
    """``nero-study data fetch``: fetch, say what was fetched from where; returns the exit code.

    1 when a download fails (the message names the file); a data set that needs a licence never fails
    the command: its instructions and the state of its layout are printed instead.
    """
    names = resolve_targets(target)
    root = resolve_root(directory)
    _say(console, f"data directory: {root}")
    for line in describe_sources(name for name in names if CATALOGUE[name].downloads):
        _say(console, f"  source {line}")
    with _download_progress(console) as progress:
        try:
            reports = fetch(target, root, log=lambda line: _say(console, line), progress=progress)
        except (DataFetchError, OSError) as exc:
            _say(console, f"error: {exc}")
            return 1
    for report in reports:
        dataset = CATALOGUE[report.dataset]
        if report.status == "fetched":
            _say(console, f"{report.dataset}: fetched {', '.join(report.files)}")
        elif report.status == "present":
            _say(console, f"{report.dataset}: already present, nothing downloaded")
        elif report.status == "packaged":
            state = "present" if report.missing is None else f"missing: {report.missing}"
            _say(console, f"{report.dataset}: ships with an installed package ({state})")
        else:
            _say(console, f"{report.dataset}: {dataset.description}; not downloadable here.")
            _say(console, dataset.manual or "")
            state = "layout present" if report.missing is None else f"layout missing: {report.missing}"
            _say(console, f"{report.dataset}: {state}")
    configured = os.environ.get("NERO_STUDY_DATA_DIR")
    if configured is None or Path(configured).expanduser().resolve() != root.resolve():
        _say(console, f"the tasks read NERO_STUDY_DATA_DIR: export NERO_STUDY_DATA_DIR={root}")
    return 0


def check_command(target: str, directory: str | None, *, console: Console) -> int:
    """``nero-study data check``: each task's data sets, present or missing, then what is missing and how
    to get it; returns the exit code, 1 when something is missing."""
    from rich.table import Table

    root = resolve_root(directory)
    rows = check(target, root)
    table = Table(title=f"data under {root}")
    for column in ("task", "data set", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.task, row.dataset, row.state if row.present else f"[red]{row.state}[/]")
    console.print(table)
    reasons = {row.dataset: row.detail for row in rows if not row.present}
    for dataset, detail in reasons.items():
        _say(console, f"{dataset}: {detail}")
    return 0 if not reasons else 1


def _say(console: Console, text: str) -> None:
    """One plain line (no markup, no wrapping: a long path stays on one line)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _download_progress(console: Console) -> Iterator[Progress | None]:
    """A rich progress bar per file on a terminal; ``None`` (no progress output) otherwise."""
    if not console.is_terminal:
        yield None
        return
    from rich import progress as rich_progress

    bars = rich_progress.Progress(
        rich_progress.TextColumn("{task.description}"),
        rich_progress.BarColumn(),
        rich_progress.DownloadColumn(),
        rich_progress.TransferSpeedColumn(),
        console=console,
    )
    task_ids: dict[str, rich_progress.TaskID] = {}

    def update(filename: str, done: int, total: int | None) -> None:
        if filename not in task_ids:
            task_ids[filename] = bars.add_task(filename, total=total)
        bars.update(task_ids[filename], completed=done, total=total)

    with bars:
        yield update
