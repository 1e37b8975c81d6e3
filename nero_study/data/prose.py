"""Real English prose shipped with Python itself: the help texts of ``pydoc_data.topics``.

``pydoc_data.topics.topics`` is a dict of topic name -> plain-text section of the Python Language
Reference (about 80 sections, ~0.47 MB of text in CPython 3.11). It is in every CPython install, so the
text-lm proxy task needs no download. The corpus is the texts joined in sorted key order with one blank
line between them, encoded as UTF-8 bytes (a fixed 256-symbol vocabulary that does not depend on the
text). The text differs slightly between Python versions; within one interpreter it is fixed.

Split: the first ``1 - validation_fraction`` of the bytes train, the last ``validation_fraction``
(default 10%) validate — a contiguous cut, so no validation text is seen in training.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

BYTE_VOCAB_SIZE = 256


class ProseSplits(NamedTuple):
    """Byte ids (int64, values in [0, 256)) of the training and validation parts of the corpus."""

    train: torch.Tensor
    validation: torch.Tensor


def pydoc_topics_text() -> str:
    """The pydoc topic texts joined in sorted key order, separated by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"


def encode_bytes(text: str) -> torch.Tensor:
    """UTF-8 bytes of ``text`` as an int64 tensor of ids in [0, 256)."""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.int64)


def decode_bytes(ids: torch.Tensor) -> str:
    """Inverse of :func:`encode_bytes` (invalid UTF-8 sequences become U+FFFD)."""
    return bytes(int(i) for i in ids.tolist()).decode("utf-8", errors="replace")


def prose_splits(validation_fraction: float = 0.1) -> ProseSplits:
    """The byte corpus cut into a training head and a validation tail of ``validation_fraction``."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"Invalid validation_fraction: {validation_fraction}; must be in (0, 1)")
    ids = encode_bytes(pydoc_topics_text())
    cut = int(round(len(ids) * (1.0 - validation_fraction)))
    return ProseSplits(train=ids[:cut], validation=ids[cut:])
