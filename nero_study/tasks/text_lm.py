"""text-lm: a small causal transformer on the bytes of Python's own documentation text (CPU proxy).

Data: :mod:`nero_study.data.prose` — the ``pydoc_data.topics`` help texts (real English prose from the
Python Language Reference, ~0.47 MB) as UTF-8 bytes, vocabulary 256; first 90% train, last 10% validate.

Stands in for the paper's WikiText-2 transformer (Liu et al. 2021; the ``wikitext2-transformer`` task has its
settings: 2 layers, 2 heads, d 200, ff 200, dropout 0.2, bptt 35, batch 20, 20 epochs, lr /10 at epoch 10).
The model here is a GPT-style pre-LN transformer (:mod:`nero_study.tasks.transformer_blocks`); the lr schedule
keeps the paper's shape (constant, then /10 for the rest of the run at ``lr_drop_at`` of the steps).

Training batches are windows of ``context + 1`` bytes at offsets drawn from the trial's generator; an
"epoch" is ``len(train) // (batch_size * context)`` steps (one pass worth of tokens). The metric is the
validation perplexity per byte over non-overlapping ``context``-byte windows of the validation tail
(each byte predicted from the bytes before it in its window); chance is 256 (uniform over bytes).

Budgets: ``smoke`` a few seconds for tests; ``proxy`` d 64, 2 layers, 4 heads, context 64, batch 32,
2.5 passes over the text (510 steps, validated on the first 16 KiB of the tail; about 20 s of one CPU
core); ``paper`` the paper's WikiText-2 model shape and
schedule (d 200, ff 200, 2 heads, dropout 0.2, context 35, batch 20, 20 epochs) on this corpus.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from nero_study.data.prose import BYTE_VOCAB_SIZE, prose_splits
from nero_study.tasks.base import Task, TrialContext
from nero_study.tasks.common import Batch, StepSchedule, train_supervised
from nero_study.tasks.transformer_blocks import Embeddings, TransformerBlock, causal_mask, sequence_perplexity


@dataclass(frozen=True)
class TextLMConfig:
    """One budget of text-lm: ``epochs`` passes worth of training bytes, cut at ``max_steps``.

    Lengths are in bytes; ``validation_bytes`` evaluates a fixed leading part of the validation tail only.
    """

    epochs: float
    evals_per_epoch: int
    max_steps: int | None = None
    context: int = 64
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    d_ff: int = 256
    dropout: float = 0.0
    batch_size: int = 32
    lr_drop_at: float = 0.5  # fraction of the training steps after which the lr is divided by 10
    grad_clip: float | None = None
    validation_fraction: float = 0.1
    validation_bytes: int | None = None


class ByteTransformerLM(nn.Module):
    """Causal byte-level transformer: embeddings, ``layers`` pre-LN blocks, final LayerNorm, linear head."""

    def __init__(self, config: TextLMConfig) -> None:
        super().__init__()
        self.embed = Embeddings(BYTE_VOCAB_SIZE, config.d_model, config.context, config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.heads, config.d_ff, config.dropout)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, BYTE_VOCAB_SIZE)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, length, 256)`` for the next byte at every position of ``ids``."""
        mask = causal_mask(ids.shape[1], ids.device)
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, self_mask=mask)
        return self.head(self.norm(x))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per byte) of ``logits`` (batch, length, vocab) against ``targets``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def validation_perplexity(
    model: nn.Module, ids: torch.Tensor, context: int, device: torch.device, batch_size: int = 128
) -> float:
    """Per-byte perplexity over non-overlapping windows of ``context`` predicted bytes of ``ids``."""
    windows = (len(ids) - 1) // context
    if windows < 1:
        raise ValueError(f"validation text of {len(ids)} bytes is shorter than one window of {context}")
    inputs = ids[: windows * context].view(windows, context)
    targets = ids[1 : windows * context + 1].view(windows, context)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, windows, batch_size):
        logits = model(inputs[start : start + batch_size].to(device))
        total += float(
            F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets[start : start + batch_size].reshape(-1).to(device),
                reduction="sum",
            )
        )
    model.train(was_training)
    return sequence_perplexity(total, windows * context)


def random_windows(
    ids: torch.Tensor, context: int, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[Batch]:
    """``steps`` batches of (input, next-byte target) windows at offsets drawn from ``generator``."""
    offsets = torch.arange(context)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
        index = starts[:, None] + offsets
        yield ids[index], ids[index + 1]


class TextLM(Task):
    name: ClassVar[str] = "text-lm"
    description: ClassVar[str] = (
        "Causal byte-level transformer on Python's pydoc topic texts (real English prose); "
        "validation perplexity per byte"
    )
    metric_name: ClassVar[str] = "validation perplexity"
    lower_is_better: ClassVar[bool] = True
    chance_metric: ClassVar[float] = float(BYTE_VOCAB_SIZE)
    kind: ClassVar[str] = "proxy"
    default_device: ClassVar[str] = "cpu"
    budgets: ClassVar[dict[str, Any]] = {
        "smoke": TextLMConfig(
            epochs=1.0, max_steps=30, evals_per_epoch=1, context=32, d_model=32, heads=2, layers=1, d_ff=64,
            batch_size=16, validation_bytes=4096,
        ),
        "proxy": TextLMConfig(epochs=2.5, evals_per_epoch=2, validation_bytes=16384),
        "paper": TextLMConfig(
            epochs=20.0, evals_per_epoch=1, context=35, d_model=200, heads=2,
            layers=2, d_ff=200, dropout=0.2, batch_size=20,
        ),
    }

    def train(self, config: TextLMConfig, ctx: TrialContext) -> None:
        splits = prose_splits(config.validation_fraction)
        validation = splits.validation
        if config.validation_bytes is not None:
            validation = validation[: config.validation_bytes + 1]
        steps_per_epoch = max(1, len(splits.train) // (config.batch_size * config.context))
        train_steps = max(1, round(config.epochs * steps_per_epoch))
        if config.max_steps is not None:
            train_steps = min(train_steps, config.max_steps)
        model = ByteTransformerLM(config).to(ctx.device)

        def batches(epoch: int) -> Iterator[Batch]:
            return random_windows(
                splits.train, config.context, config.batch_size, steps_per_epoch, ctx.generator
            )

        train_supervised(
            ctx,
            model=model,
            batches=batches,
            epochs=math.ceil(train_steps / steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            evaluate=lambda: validation_perplexity(model, validation, config.context, ctx.device),
            loss_fn=next_token_loss,
            schedule=StepSchedule(milestones=(config.lr_drop_at * train_steps / steps_per_epoch,)),
            evals_per_epoch=config.evals_per_epoch,
            grad_clip=config.grad_clip,
            max_steps=train_steps,
        )
