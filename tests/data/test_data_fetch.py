"""`nero-study data fetch / check` against a local HTTP server serving generated files in the real formats.

The catalogue's entries are served from a loopback port with the generated files' own sizes and SHA-256;
their file names, unpack rules and target layout stay those of the real catalogue, so what is checked here
is what a real fetch writes. Nothing reaches the internet.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import random
import struct
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nero_study import datasets as fetch
from nero_study.cli import app
from nero_study.data.cifar10 import load_cifar10, write_cifar_batch
from nero_study.data.mnist import load_mnist
from nero_study.data.parallel_text import load_multi30k
from nero_study.data.wikitext import load_wikitext2
from nero_study.tasks.fid import resolve_inception_weights
from nero_study.tasks.registry import get_task, task_names

runner = CliRunner()
PER_BATCH = 12


# --- a local file server with HTTP Range support ------------------------------------------------------------


class FileServer:
    """Serves ``files`` (URL path -> bytes) on a free loopback port and records each request's Range header.

    ``cut_next[path] = n`` sends only the first ``n`` bytes of the next response for ``path`` (with the full
    Content-Length) and drops the connection; ``honour_range = False`` answers every request with the
    whole file (a server without resume support).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.cut_next: dict[str, int] = {}
        self.honour_range = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                requested = self.headers.get("Range")
                owner.requests.append((self.path, requested))
                data = owner.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if requested and owner.honour_range:
                    start = int(requested.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = owner.cut_next.pop(self.path, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence the log
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every request for ``path``, in order (None: the whole file)."""
        return [requested for served, requested in self.requests if served == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- generated files in the real formats ----------------------------------------------------------------------


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def cifar_tarball(tmp_path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    """cifar-10-python.tar.gz as its authors pack it: cifar-10-batches-py/ with the six batches and meta."""
    rng = np.random.default_rng(0)
    members, images = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        write_cifar_batch(tmp_path / name, data, [int(v) for v in rng.integers(0, 10, PER_BATCH)], name)
        members[f"cifar-10-batches-py/{name}"] = (tmp_path / name).read_bytes()
        images[name] = data
    meta = {b"label_names": [b"airplane", b"automobile"], b"num_cases_per_batch": PER_BATCH}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    return _tar_gz(members), images


def idx_gz(array: np.ndarray) -> bytes:
    """An IDX file (unsigned bytes), gzip-compressed, as MNIST's authors distribute it."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def mnist_files() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    return {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (20, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 20)),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (10, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, 10)),
    }


def wikitext_zip() -> bytes:
    """wikitext-2-v1.zip: wikitext-2/wiki.{train,valid,test}.tokens (and the folder entry, as the real zip)."""
    rng = random.Random(2)
    words = "the of and in to a was game series <unk> , . @-@ battle".split()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("wikitext-2/", b"")
        for split in ("train", "valid", "test"):
            lines = [" \n", " = Title = \n", " \n"] + [
                " " + " ".join(rng.choices(words, k=8)) + " \n" for _ in range(40)
            ]
            zipped.writestr(f"wikitext-2/wiki.{split}.tokens", "".join(lines))
    return buffer.getvalue()


def multi30k_archives() -> dict[str, bytes]:
    """training.tar.gz and validation.tar.gz with {train,val}.{de,en} at the top, as the WMT16 release."""
    german = ["Ein Hund läuft.", "Eine Frau sitzt auf der Bank.", "Ein Kind spielt im Park."] * 6
    english = ["A dog runs.", "A woman sits on the bench.", "A child plays in the park."] * 6
    archives = {}
    for archive, split in (("training", "train"), ("validation", "val")):
        archives[f"{archive}.tar.gz"] = _tar_gz(
            {f"{split}.de": "\n".join(german).encode() + b"\n", f"{split}.en": "\n".join(english).encode() + b"\n"}
        )
    return archives


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@dataclasses.dataclass
class Served:
    server: FileServer
    catalogue: dict[str, fetch.DataSet]
    payloads: dict[str, bytes]  # file name -> bytes served
    cifar_images: dict[str, np.ndarray]

    def path(self, filename: str) -> str:
        return f"/{filename}"


def _served_download(download: fetch.Download, server: FileServer, content: bytes) -> fetch.Download:
    """The real catalogue entry, served locally: same name, unpack rule and targets; this file's size and
    checksum (a full SHA-256, or its first 8 hex digits where the real entry publishes only those)."""
    digest = sha256(content)
    assert download.checksum is not None
    value = digest[:8] if download.checksum.algorithm == "sha256-prefix" else digest
    return dataclasses.replace(
        download,
        urls=(server.url(f"/{download.filename}"),),
        size=len(content),
        checksum=fetch.Checksum(download.checksum.algorithm, value, "generated by the test"),
    )


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """Every downloadable data set of the catalogue served from a loopback port; the CLI sees that catalogue."""
    cifar, cifar_images = cifar_tarball(tmp_path)
    payloads = {"cifar-10-python.tar.gz": cifar, "wikitext-2-v1.zip": wikitext_zip(), **mnist_files()}
    payloads |= multi30k_archives()
    payloads["pt_inception-2015-12-05-6726825d.pth"] = b"generated stand-in for the weights file" * 100
    server = FileServer({f"/{name}": content for name, content in payloads.items()})
    catalogue = dict(fetch.CATALOGUE)
    for name, dataset in fetch.CATALOGUE.items():
        if dataset.downloads:
            downloads = tuple(_served_download(d, server, payloads[d.filename]) for d in dataset.downloads)
            catalogue[name] = dataclasses.replace(dataset, downloads=downloads)
    monkeypatch.setattr(fetch, "CATALOGUE", catalogue)
    monkeypatch.delenv("NERO_STUDY_DATA_DIR", raising=False)
    yield Served(server, catalogue, payloads, cifar_images)
    server.close()


def run_cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# --- fetch ----------------------------------------------------------------------------------------------------


def test_fetch_all_verifies_unpacks_and_every_loader_reads_the_result(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    code, output = run_cli("data", "fetch", "all", "--dir", str(root))

    assert code == 0, output
    assert f"cifar-10-python.tar.gz: {len(served.payloads['cifar-10-python.tar.gz'])} bytes, SHA-256" in output
    assert "cifar10: fetched cifar-10-batches-py/data_batch_1" in output
    assert "mnist: fetched mnist/train-images-idx3-ubyte.gz" in output
    assert "imagenet: ImageNet ILSVRC2012 (licence and login required); not downloadable here." in output
    assert "https://image-net.org" in output and "imagenet: layout missing" in output
    assert f"export NERO_STUDY_DATA_DIR={root}" in output
    # what the loaders read, equal to what was served
    split = load_cifar10(root)
    assert np.array_equal(split.test_images.reshape(PER_BATCH, -1).numpy(), served.cifar_images["test_batch"])
    assert len(split.train_images) == 5 * PER_BATCH
    assert len(load_mnist(root).train_images) == 20
    assert load_wikitext2(root).vocabulary.ids["<unk>"] >= 0
    assert len(load_multi30k(root, min_freq=1).train) == 18
    assert resolve_inception_weights(None, root) == root / "pt_inception-2015-12-05.pth"
    # the tasks' own data checks accept it
    monkeypatch.setenv("NERO_STUDY_DATA_DIR", str(root))
    for task in (
        "cifar10-resnet18",
        "cifar10-vgg11",
        "mnist-mlp100",
        "wikitext2-transformer",
        "translation-transformer",
    ):
        get_task(task).check_data(get_task(task).config("paper"))
    # nothing half-written or left over: archives are gone once unpacked, no temporary files anywhere
    assert list((root / fetch.DOWNLOADS_SUBDIR).iterdir()) == []
    assert [p for p in root.rglob("*") if p.name.endswith((".tmp", ".part"))] == []
    assert not (root / "cifar-10-batches-py" / "readme.html").exists()  # only the catalogue's members


def test_fetch_again_downloads_nothing(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert run_cli("data", "fetch", "cifar10-cgan", "--dir", str(root))[0] == 0
    requests_before = len(served.server.requests)

    code, output = run_cli("data", "fetch", "cifar10-cgan", "--dir", str(root))

    assert code == 0, output
    assert "cifar10: already present, nothing downloaded" in output
    assert "fid-inception: already present, nothing downloaded" in output
    assert len(served.server.requests) == requests_before


def test_a_truncated_transfer_is_resumed_with_a_range_request(served: Served, tmp_path: Path) -> None:
    path = "/wikitext-2-v1.zip"
    served.server.cut_next[path] = 1000
    root = tmp_path / "data"

    code, output = run_cli("data", "fetch", "wikitext2-transformer", "--dir", str(root))

    assert code == 0, output
    assert served.server.gets(path) == [None, "bytes=1000-"]
    assert "wikitext-2-v1.zip: resuming at byte 1000 from" in output
    assert len(load_wikitext2(root).train) > 0


@pytest.mark.parametrize("kept_fraction", [0.5, 1.0])
def test_a_part_left_by_an_earlier_run_is_resumed(served: Served, tmp_path: Path, kept_fraction: float) -> None:
    root = tmp_path / "data"
    payload = served.payloads["training.tar.gz"]
    part = root / fetch.DOWNLOADS_SUBDIR / "training.tar.gz.part"
    part.parent.mkdir(parents=True)
    kept = int(len(payload) * kept_fraction)
    part.write_bytes(payload[:kept])

    assert run_cli("data", "fetch", "multi30k", "--dir", str(root))[0] == 0

    assert served.server.gets("/training.tar.gz") == [f"bytes={kept}-"]  # all of it kept: answered 416
    assert (root / "multi30k" / "train.de").read_text(encoding="utf-8").startswith("Ein Hund läuft.")


def test_a_server_without_range_support_sends_the_whole_file_again(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    payload = served.payloads["training.tar.gz"]
    part = root / fetch.DOWNLOADS_SUBDIR / "training.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(payload) // 2))  # not even the right bytes: must not be kept
    served.server.honour_range = False

    assert run_cli("data", "fetch", "multi30k", "--dir", str(root))[0] == 0

    assert served.server.gets("/training.tar.gz") == [f"bytes={len(payload) // 2}-"]  # answered 200, whole file
    assert len(load_multi30k(root, min_freq=1).valid) == 18


def test_a_kept_part_that_does_not_verify_is_downloaded_again_from_the_start(served: Served, tmp_path: Path) -> None:
    root = tmp_path / "data"
    payload = served.payloads["validation.tar.gz"]
    part = root / fetch.DOWNLOADS_SUBDIR / "validation.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)  # bytes of something else, left by an earlier run

    code, output = run_cli("data", "fetch", "multi30k", "--dir", str(root))

    assert code == 0, output
    assert served.server.gets("/validation.tar.gz") == ["bytes=100-", None]
    assert "validation.tar.gz: did not verify after resuming at byte 100; downloading it again" in output
    assert (root / "multi30k" / "val.en").read_bytes() == tarfile.open(fileobj=io.BytesIO(payload)).extractfile(
        "val.en"
    ).read()


def test_an_archive_that_cannot_be_unpacked_is_an_error_naming_it(served: Served, tmp_path: Path) -> None:
    served.server.files["/wikitext-2-v1.zip"] = b"not a zip archive"
    entry = served.catalogue["wikitext2"]
    served.catalogue["wikitext2"] = dataclasses.replace(
        entry, downloads=(dataclasses.replace(entry.downloads[0], checksum=None, size=None),)
    )

    code, output = run_cli("data", "fetch", "wikitext2", "--dir", str(tmp_path))

    assert code == 1
    assert "could not unpack wikitext-2-v1.zip" in output
    assert not (tmp_path / "wikitext-2").exists()
    assert list((tmp_path / fetch.DOWNLOADS_SUBDIR).iterdir()) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"checksum": fetch.Checksum("sha256", "0" * 64, "wrong on purpose")}, "expected SHA-256 0000"),
        ({"size": 1234}, "offers"),
    ],
)
def test_a_wrong_checksum_or_size_is_an_error_naming_the_file_and_leaves_nothing(
    served: Served, tmp_path: Path, change: dict, expected: str
) -> None:
    mnist = served.catalogue["mnist"]
    bad = dataclasses.replace(mnist.downloads[0], **change)
    served.catalogue["mnist"] = dataclasses.replace(mnist, downloads=(bad, *mnist.downloads[1:]))
    root = tmp_path / "data"

    code, output = run_cli("data", "fetch", "mnist-mlp100", "--dir", str(root))

    assert code == 1
    assert "could not fetch train-images-idx3-ubyte.gz" in output and expected in output
    assert served.server.url("/train-images-idx3-ubyte.gz") in output
    assert not (root / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert list((root / fetch.DOWNLOADS_SUBDIR).iterdir()) == []  # the bad download was deleted


def test_an_unverified_download_warns_and_prints_the_sha256_it_computed(served: Served, tmp_path: Path) -> None:
    entry = served.catalogue["fid-inception"]
    served.catalogue["fid-inception"] = dataclasses.replace(
        entry, downloads=(dataclasses.replace(entry.downloads[0], checksum=None, size=None),)
    )
    content = served.payloads["pt_inception-2015-12-05-6726825d.pth"]

    code, output = run_cli("data", "fetch", "fid-inception", "--dir", str(tmp_path))

    assert code == 0, output
    assert "warning: pt_inception-2015-12-05-6726825d.pth is unverified (no published checksum)" in output
    assert sha256(content) in output


def test_a_published_sha256_prefix_is_checked_and_the_full_digest_printed(served: Served, tmp_path: Path) -> None:
    content = served.payloads["pt_inception-2015-12-05-6726825d.pth"]

    code, output = run_cli("data", "fetch", "fid-inception", "--dir", str(tmp_path))

    assert code == 0, output
    assert f"verified the published SHA-256 prefix {sha256(content)[:8]}; full SHA-256 {sha256(content)}" in output
    assert (tmp_path / "pt_inception-2015-12-05.pth").read_bytes() == content


def test_imagenet_says_how_to_get_it_and_checks_the_layout(served: Served, tmp_path: Path) -> None:
    code, output = run_cli("data", "fetch", "imagenet-resnet50", "--dir", str(tmp_path))
    assert code == 0 and "ILSVRC2012_img_train.tar" in output and "imagenet: layout missing" in output
    assert served.server.requests == []
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)

    code, output = run_cli("data", "fetch", "imagenet-resnet50", "--dir", str(tmp_path))

    assert code == 0 and "imagenet: layout present" in output


# --- check ----------------------------------------------------------------------------------------------------


def test_check_lists_each_tasks_data_as_present_or_missing(served: Served, tmp_path: Path) -> None:
    assert run_cli("data", "fetch", "cifar10", "--dir", str(tmp_path))[0] == 0

    code, output = run_cli("data", "check", "--dir", str(tmp_path))

    assert code == 1
    lines = output.splitlines()
    assert any("cifar10-resnet18" in line and "cifar10" in line and "present" in line for line in lines)
    assert any("mnist-mlp100" in line and "missing" in line for line in lines)
    assert any("cifar10-cgan" in line and "fid-inception" in line and "missing" in line for line in lines)
    assert any("ppo-pong" in line and "present (in a package)" in line for line in lines)
    assert any(line.startswith("mnist: expected MNIST's IDX files") and "data fetch mnist" in line for line in lines)
    assert run_cli("data", "check", "cifar10-resnet18", "--dir", str(tmp_path))[0] == 0


def test_check_and_fetch_refuse_unknown_names_and_a_missing_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = run_cli("data", "fetch", "cifar100")
    assert code == 2 and "Unknown task or data set 'cifar100'; valid: all, digits-mlp" in output
    monkeypatch.delenv("NERO_STUDY_DATA_DIR", raising=False)
    code, output = run_cli("data", "check")
    assert code == 2 and "pass --dir DIR or set NERO_STUDY_DATA_DIR" in output


# --- the catalogue itself -------------------------------------------------------------------------------------


def test_every_task_has_its_data_sets_and_every_checksum_names_its_source() -> None:
    assert set(fetch.TASK_DATA) == set(task_names())
    used = {name for names in fetch.TASK_DATA.values() for name in names}
    assert used == set(fetch.CATALOGUE)
    for task in task_names():
        if get_task(task).kind == "paper":
            assert fetch.TASK_DATA[task], f"{task} reads data from NERO_STUDY_DATA_DIR"
    for dataset in fetch.CATALOGUE.values():
        assert bool(dataset.downloads) + (dataset.manual is not None) + dataset.packaged == 1, dataset.name
        for download in dataset.downloads:
            assert download.urls and all(url.startswith(("https://", "http://")) for url in download.urls)
            assert download.checksum is not None and download.checksum.source
            length = 64 if download.checksum.algorithm == "sha256" else 8
            assert len(download.checksum.value) == length and int(download.checksum.value, 16) >= 0
            assert len(download.extracts) == 1 if download.unpack == "none" else download.extracts
