"""WikiText-2 in its standard on-disk format: word-level token files, read into id streams.

Layout under a data directory: ``wikitext-2/wiki.train.tokens``, ``wiki.valid.tokens``,
``wiki.test.tokens`` (UTF-8 text, already tokenised: tokens separated by whitespace, rare words
replaced by ``<unk>`` by the data set's authors).

Convention (that of the PyTorch ``word_language_model`` example, on which the Nero paper's WikiText-2
code is built): every line, blank lines included, becomes its whitespace-split tokens followed by
``<eos>``; one vocabulary is built over train, then valid, then test, in order of first appearance
(33,278 words for WikiText-2). Nothing is downloaded here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

EOS = "<eos>"
WIKITEXT2_SUBDIR = "wikitext-2"
SPLIT_FILES: dict[str, str] = {
    "train": "wiki.train.tokens",
    "valid": "wiki.valid.tokens",
    "test": "wiki.test.tokens",
}


class Vocabulary:
    """Words in order of first appearance and their ids (``words[id]`` is the word)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.ids: dict[str, int] = {}

    def add(self, word: str) -> int:
        """The id of ``word``, adding it at the end when new."""
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """A 1-D int64 tensor of the ids of ``tokens``; every token must be in the vocabulary."""
        return torch.tensor([self.ids[token] for token in tokens], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class TokenCorpus:
    """The three splits as 1-D id streams over one shared :class:`Vocabulary`."""

    vocabulary: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


def wikitext2_files(data_dir: Path) -> dict[str, Path]:
    """``split -> path`` of the WikiText-2 token files under ``data_dir``."""
    base = Path(data_dir) / WIKITEXT2_SUBDIR
    return {split: base / name for split, name in SPLIT_FILES.items()}


def read_tokens(path: Path) -> list[str]:
    """The tokens of a token file: each line's whitespace-split words, then ``<eos>``."""
    tokens: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            tokens.extend(line.split())
            tokens.append(EOS)
    return tokens


def load_token_corpus(files: dict[str, Path]) -> TokenCorpus:
    """Read ``files`` (keys ``train``, ``valid``, ``test``) and map them to ids of one vocabulary.

    Missing files raise :class:`FileNotFoundError` naming the path.
    """
    for path in files.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"WikiText-2 token file not found: {path}")
    vocabulary = Vocabulary()
    streams: dict[str, torch.Tensor] = {}
    for split in ("train", "valid", "test"):
        tokens = read_tokens(files[split])
        for token in tokens:
            vocabulary.add(token)
        streams[split] = vocabulary.encode(tokens)
    return TokenCorpus(vocabulary=vocabulary, **streams)


def load_wikitext2(data_dir: Path) -> TokenCorpus:
    """WikiText-2 from ``<data_dir>/wikitext-2/wiki.{train,valid,test}.tokens``."""
    return load_token_corpus(wikitext2_files(data_dir))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D stream into ``batch_size`` contiguous columns: shape ``(len(ids) // batch_size, batch_size)``.

    Column ``j`` holds the ``j``-th slice of the stream; the remainder that does not fill a row is dropped.
    """
    if batch_size < 1:
        raise ValueError(f"Invalid batch_size: {batch_size}")
    rows = len(ids) // batch_size
    if rows < 2:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for batch size {batch_size}")
    return ids[: rows * batch_size].view(batch_size, rows).t().contiguous()


def bptt_chunks(source: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(inputs, targets)`` windows of up to ``bptt`` rows of a batchified stream.

    ``targets`` is ``inputs`` shifted one row down (the next token of each column); the last window is
    shorter when ``rows - 1`` is not a multiple of ``bptt``.
    """
    for start in range(0, source.size(0) - 1, bptt):
        length = min(bptt, source.size(0) - 1 - start)
        yield source[start : start + length], source[start + 1 : start + 1 + length]


def count_bptt_chunks(rows: int, bptt: int) -> int:
    """How many windows :func:`bptt_chunks` yields for ``rows`` rows."""
    return max(0, -(-(rows - 1) // bptt))
