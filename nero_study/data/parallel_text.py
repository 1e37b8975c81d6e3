"""Sentence-aligned parallel text (Multi30k de-en in its standard plain-text release), tokenised and indexed.

Layout under a data directory: ``multi30k/train.de``, ``train.en``, ``val.de``, ``val.en`` — UTF-8, one
sentence per line, line ``i`` of ``X.de`` translated by line ``i`` of ``X.en``.

Processing follows the Nero paper's translation code (a fork of jadore801120's
attention-is-all-you-need-pytorch, whose ``preprocess.py`` lowercases, tokenises, drops pairs longer than
``max_len`` = 100 tokens and builds a vocabulary from the training pairs with min frequency 3 per side,
then merges source and target into one shared vocabulary), with two documented differences:

- the tokenizer is our own: lowercase, then words (``\\w+``, Unicode-aware) and single punctuation marks
  (spaCy's tokenizers in the paper's code split a few clitics differently, e.g. "don't");
- the joint vocabulary keeps a word that occurs at least ``min_freq`` times on the source side *or* at
  least ``min_freq`` times on the target side of the kept training pairs (the merge the paper's code
  does), ordered specials, then source words, then new target words, each by descending count then
  alphabetically.

Every sentence is wrapped as ``<s> tokens </s>``; unknown words map to ``<unk>``; ``<pad>`` is id 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
MULTI30K_SUBDIR = "multi30k"
_TOKEN = re.compile(r"\w+|[^\w\s]")

TokenPair = tuple[list[str], list[str]]
IdPair = tuple[torch.Tensor, torch.Tensor]


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation marks of ``text``: ``"A dog, running."`` ->
    ``["a", "dog", ",", "running", "."]``."""
    return _TOKEN.findall(text.lower())


def multi30k_files(data_dir: Path, source: str = "de", target: str = "en") -> dict[str, tuple[Path, Path]]:
    """``split -> (source file, target file)`` for ``train`` and ``val`` under ``<data_dir>/multi30k``."""
    base = Path(data_dir) / MULTI30K_SUBDIR
    return {split: (base / f"{split}.{source}", base / f"{split}.{target}") for split in ("train", "val")}


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle]


def read_parallel(source_path: Path, target_path: Path) -> list[TokenPair]:
    """Tokenised ``(source, target)`` sentence pairs, line by line; pairs with an empty side are dropped.

    Files with different line counts are not aligned and raise :class:`ValueError` naming both.
    """
    for path in (source_path, target_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"parallel text file not found: {path}")
    source_lines = _read_lines(source_path)
    target_lines = _read_lines(target_path)
    if len(source_lines) != len(target_lines):
        raise ValueError(
            f"parallel files are not aligned: {source_path} has {len(source_lines)} lines but "
            f"{target_path} has {len(target_lines)}; line i of one must translate line i of the other"
        )
    pairs = [(tokenize(src), tokenize(tgt)) for src, tgt in zip(source_lines, target_lines, strict=True)]
    return [(src, tgt) for src, tgt in pairs if src and tgt]


class JointVocabulary:
    """One vocabulary for both languages; ids of the specials are fixed (``<pad>`` 0, ``<unk>`` 1, ...)."""

    def __init__(self, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a joint vocabulary must start with {SPECIALS}")
        self.words = list(words)
        self.ids = {word: index for index, word in enumerate(self.words)}
        if len(self.ids) != len(self.words):
            raise ValueError("duplicate words in the vocabulary")
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.ids[s] for s in SPECIALS)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """``<s>`` + ids of ``tokens`` (``<unk>`` for unknown words) + ``</s>`` as a 1-D int64 tensor."""
        ids = [self.bos_id, *(self.ids.get(token, self.unk_id) for token in tokens), self.eos_id]
        return torch.tensor(ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.words)


def _frequent(counts: Counter[str], min_freq: int) -> list[str]:
    kept = [(word, count) for word, count in counts.items() if count >= min_freq]
    return [word for word, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


def build_joint_vocabulary(pairs: Sequence[TokenPair], min_freq: int) -> JointVocabulary:
    """Specials, then words seen ``min_freq`` times on the source side, then those on the target side."""
    if min_freq < 1:
        raise ValueError(f"Invalid min_freq: {min_freq}")
    source_counts = Counter(token for src, _ in pairs for token in src)
    target_counts = Counter(token for _, tgt in pairs for token in tgt)
    words = list(SPECIALS)
    seen = set(words)
    for word in _frequent(source_counts, min_freq) + _frequent(target_counts, min_freq):
        if word not in seen:
            seen.add(word)
            words.append(word)
    return JointVocabulary(words)


def filter_length(pairs: Sequence[TokenPair], max_len: int) -> list[TokenPair]:
    """The pairs whose source and target both have at most ``max_len`` tokens (before ``<s>``/``</s>``)."""
    return [(src, tgt) for src, tgt in pairs if len(src) <= max_len and len(tgt) <= max_len]


@dataclass(frozen=True)
class ParallelCorpus:
    """Training and validation pairs as id tensors over one :class:`JointVocabulary`."""

    vocabulary: JointVocabulary
    train: list[IdPair]
    valid: list[IdPair]


def load_parallel_corpus(
    files: dict[str, tuple[Path, Path]], *, min_freq: int, max_len: int
) -> ParallelCorpus:
    """Read ``files`` (keys ``train``, ``val``), drop over-long pairs, build the vocabulary on train."""
    train_pairs = filter_length(read_parallel(*files["train"]), max_len)
    valid_pairs = filter_length(read_parallel(*files["val"]), max_len)
    if not train_pairs or not valid_pairs:
        raise ValueError(f"no sentence pairs of at most {max_len} tokens in {files}")
    vocabulary = build_joint_vocabulary(train_pairs, min_freq)

    def encode(pairs: list[TokenPair]) -> list[IdPair]:
        return [(vocabulary.encode(src), vocabulary.encode(tgt)) for src, tgt in pairs]

    return ParallelCorpus(vocabulary=vocabulary, train=encode(train_pairs), valid=encode(valid_pairs))


def load_multi30k(data_dir: Path, *, min_freq: int = 3, max_len: int = 100) -> ParallelCorpus:
    """Multi30k de->en from ``<data_dir>/multi30k/{train,val}.{de,en}``."""
    return load_parallel_corpus(multi30k_files(data_dir), min_freq=min_freq, max_len=max_len)


def pad_sequences(sequences: Sequence[torch.Tensor], pad_id: int) -> torch.Tensor:
    """Stack 1-D id tensors into ``(len(sequences), longest)``, right-padded with ``pad_id``."""
    longest = max(len(sequence) for sequence in sequences)
    batch = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = sequence
    return batch
