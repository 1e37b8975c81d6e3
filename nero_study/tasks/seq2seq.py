"""seq2seq: an encoder-decoder transformer on a generated toy "translation" (CPU proxy).

Stands in for the paper's translation transformer (Liu et al. 2021; the ``translation-transformer`` task has
its settings: 6+6 layers, d 512, 8 heads, shared embeddings, label smoothing, Multi30k de-en) with data that
needs no download.

The language pair (:func:`make_language`, fixed by ``data_seed`` and independent of the trial seed):
source words ``s_0..s_{S-1}``, target words ``t_0..t_{T-1}``; a lexicon maps each source word to one
target word or, for about a third of the words, to two (a fixed phrase). A source sentence of uniform
random length in ``[min_length, max_length]`` translates to its words in reverse order, each replaced
by its lexicon entry, followed by EOS. So a model must learn the word translations (a lookup) and the
reordering (attention over the source); a perfect model has perplexity 1. One id space holds PAD, BOS,
EOS, the source and the target words; unlike the paper, the encoder embedding, decoder embedding and
output layer are separate tensors (no weight tying), so every optimiser sees plain parameters.

Training: teacher forcing (decoder input BOS + target, prediction target + EOS), cross-entropy with
``label_smoothing``, padding ignored. A batch's input packs the padded source and decoder input as one
``(batch, 2, length)`` tensor so that the shared supervised loop can be used. The metric is validation
perplexity per target token (plain cross-entropy, no smoothing) over the fixed validation pairs; chance
is the vocabulary size. The lr is constant, then /10 after ``lr_drop_at`` of the steps (a simplification
of the paper's per-epoch triangular schedule).

Budgets: ``smoke`` seconds for tests; ``proxy`` d 64, 2+2 layers, 4 heads, 8192 training pairs, batch 64,
4 epochs = 512 steps (about 22 s of one CPU core); ``paper`` a longer, wider version (d 128, 3+3 layers,
40 epochs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nero_study.tasks.base import Task, TrialContext
from nero_study.tasks.common import StepSchedule, steps_per_epoch, tensor_batches, train_supervised
from nero_study.tasks.transformer_blocks import (
    Embeddings,
    TransformerBlock,
    causal_mask,
    key_padding_mask,
    sequence_perplexity,
)

PAD, BOS, EOS = 0, 1, 2
SPECIAL_TOKENS = 3


@dataclass(frozen=True)
class Seq2SeqConfig:
    """One budget of seq2seq: the generated language, the model and the training length."""

    epochs: int
    evals_per_epoch: int
    max_steps: int | None = None
    source_words: int = 24
    target_words: int = 32
    two_word_fraction: float = 1 / 3
    min_length: int = 4
    max_length: int = 12
    train_pairs: int = 8192
    validation_pairs: int = 1024
    data_seed: int = 1234
    d_model: int = 64
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.0
    label_smoothing: float = 0.1
    batch_size: int = 64
    lr_drop_at: float = 0.5  # fraction of the training steps after which the lr is divided by 10
    grad_clip: float | None = None


class Language(NamedTuple):
    """A generated language pair: ``lexicon[w]`` is the tuple of target ids for source id ``w``."""

    vocab_size: int
    source_ids: tuple[int, ...]
    lexicon: dict[int, tuple[int, ...]]


class Pairs(NamedTuple):
    """Padded pairs: ``source`` (n, max_length), ``decoder_input`` and ``target`` (n, 2 max_length + 1)."""

    source: torch.Tensor
    decoder_input: torch.Tensor
    target: torch.Tensor


def make_language(config: Seq2SeqConfig) -> Language:
    """The lexicon drawn from ``config.data_seed``: first target words distinct, some words get a second."""
    if config.target_words < config.source_words:
        raise ValueError(
            f"Invalid target_words: {config.target_words}; need at least source_words {config.source_words}"
        )
    rng = np.random.default_rng(config.data_seed)
    source_ids = tuple(range(SPECIAL_TOKENS, SPECIAL_TOKENS + config.source_words))
    target_base = SPECIAL_TOKENS + config.source_words
    first = rng.permutation(config.target_words)[: config.source_words]
    lexicon: dict[int, tuple[int, ...]] = {}
    for word, first_word in zip(source_ids, first, strict=True):
        entry = (target_base + int(first_word),)
        if rng.random() < config.two_word_fraction:
            entry += (target_base + int(rng.integers(config.target_words)),)
        lexicon[word] = entry
    return Language(target_base + config.target_words, source_ids, lexicon)


def translate(sentence: list[int], language: Language) -> list[int]:
    """The target sentence (without EOS): source words reversed, each replaced by its lexicon entry."""
    return [target for word in reversed(sentence) for target in language.lexicon[word]]


def make_pairs(config: Seq2SeqConfig, language: Language, count: int, rng: np.random.Generator) -> Pairs:
    """``count`` random source sentences and their translations, padded with PAD."""
    target_length = 2 * config.max_length + 1
    source = torch.full((count, config.max_length), PAD, dtype=torch.int64)
    decoder_input = torch.full((count, target_length), PAD, dtype=torch.int64)
    target = torch.full((count, target_length), PAD, dtype=torch.int64)
    words = np.asarray(language.source_ids)
    for row in range(count):
        length = int(rng.integers(config.min_length, config.max_length + 1))
        sentence = [int(w) for w in rng.choice(words, size=length)]
        translation = translate(sentence, language)
        source[row, :length] = torch.tensor(sentence)
        decoder_input[row, : len(translation) + 1] = torch.tensor([BOS, *translation])
        target[row, : len(translation) + 1] = torch.tensor([*translation, EOS])
    return Pairs(source, decoder_input, target)


def make_dataset(config: Seq2SeqConfig) -> tuple[Language, Pairs, Pairs]:
    """The language and its (train, validation) pairs, all fixed by ``config.data_seed``."""
    language = make_language(config)
    rng = np.random.default_rng([config.data_seed, 1])
    train = make_pairs(config, language, config.train_pairs, rng)
    validation = make_pairs(config, language, config.validation_pairs, rng)
    return language, train, validation


def pack(source: torch.Tensor, decoder_input: torch.Tensor) -> torch.Tensor:
    """Stack source and decoder input, right-padded to one length, as ``(n, 2, length)``."""
    length = max(source.shape[1], decoder_input.shape[1])
    source = F.pad(source, (0, length - source.shape[1]), value=PAD)
    decoder_input = F.pad(decoder_input, (0, length - decoder_input.shape[1]), value=PAD)
    return torch.stack([source, decoder_input], dim=1)


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop trailing columns that are PAD in every row (saves compute; results do not change)."""
    used = int((ids != PAD).any(dim=0).nonzero().max()) + 1 if bool((ids != PAD).any()) else 1
    return ids[:, :used]


class EncoderDecoder(nn.Module):
    """Pre-LN encoder-decoder transformer; ``forward(packed)`` gives next-token logits for the decoder."""

    def __init__(self, vocab_size: int, max_length: int, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.source_embed = Embeddings(vocab_size, config.d_model, max_length, config.dropout)
        self.target_embed = Embeddings(vocab_size, config.d_model, max_length, config.dropout)
        self.encoder = nn.ModuleList(
            TransformerBlock(config.d_model, config.heads, config.d_ff, config.dropout)
            for _ in range(config.encoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(config.d_model)
        self.decoder = nn.ModuleList(
            TransformerBlock(config.d_model, config.heads, config.d_ff, config.dropout, cross_attention=True)
            for _ in range(config.decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, vocab_size)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, target length, vocab)``; the length is trimmed to the batch's longest target."""
        source, decoder_input = _trim(packed[:, 0]), _trim(packed[:, 1])
        source_mask = key_padding_mask(source, PAD)
        memory = self.source_embed(source)
        for block in self.encoder:
            memory = block(memory, self_mask=source_mask)
        memory = self.encoder_norm(memory)
        x = self.target_embed(decoder_input)
        self_mask = causal_mask(decoder_input.shape[1], decoder_input.device)
        for block in self.decoder:
            x = block(x, self_mask=self_mask, memory=memory, memory_mask=source_mask)
        return self.head(self.decoder_norm(x))


def sequence_loss(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``logits`` (batch, length', vocab) against ``target`` cut to length'; PAD ignored."""
    target = target[:, : logits.shape[1]]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        target.reshape(-1),
        ignore_index=PAD,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )


@torch.no_grad()
def validation_perplexity(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, device: torch.device, batch_size: int = 256
) -> float:
    """Per-token perplexity of the target (EOS included, PAD excluded) under teacher forcing."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size].to(device))
        total += float(sequence_loss(logits, target[start : start + batch_size].to(device), reduction="sum"))
    model.train(was_training)
    return sequence_perplexity(total, int((target != PAD).sum()))


class Seq2Seq(Task):
    name: ClassVar[str] = "seq2seq"
    description: ClassVar[str] = (
        "Encoder-decoder transformer on a generated toy translation (reverse + lexicon with phrases); "
        "validation perplexity per target token"
    )
    metric_name: ClassVar[str] = "validation perplexity"
    lower_is_better: ClassVar[bool] = True
    # uniform over the default vocabulary (PAD, BOS, EOS, 24 source and 32 target words): 59
    chance_metric: ClassVar[float] = float(
        SPECIAL_TOKENS + Seq2SeqConfig.source_words + Seq2SeqConfig.target_words
    )
    kind: ClassVar[str] = "proxy"
    default_device: ClassVar[str] = "cpu"
    budgets: ClassVar[dict[str, Any]] = {
        "smoke": Seq2SeqConfig(
            epochs=1, evals_per_epoch=1, max_steps=20, train_pairs=640, validation_pairs=128, d_model=32,
            heads=2, encoder_layers=1, decoder_layers=1, d_ff=64, batch_size=32,
        ),
        "proxy": Seq2SeqConfig(epochs=4, evals_per_epoch=2),
        "paper": Seq2SeqConfig(
            epochs=40, evals_per_epoch=1, train_pairs=65536, validation_pairs=4096, d_model=128,
            encoder_layers=3, decoder_layers=3, d_ff=512, dropout=0.1, batch_size=128,
        ),
    }

    def train(self, config: Seq2SeqConfig, ctx: TrialContext) -> None:
        language, train, validation = make_dataset(config)
        max_length = 2 * config.max_length + 1
        model = EncoderDecoder(language.vocab_size, max_length, config).to(ctx.device)
        train_inputs = pack(train.source, train.decoder_input)
        validation_inputs = pack(validation.source, validation.decoder_input)
        per_epoch = steps_per_epoch(config.train_pairs, config.batch_size)
        total_steps = config.epochs * per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)

        train_supervised(
            ctx,
            model=model,
            batches=tensor_batches(train_inputs, train.target, config.batch_size, ctx.generator),
            epochs=math.ceil(total_steps / per_epoch),
            steps_per_epoch=per_epoch,
            evaluate=lambda: validation_perplexity(model, validation_inputs, validation.target, ctx.device),
            loss_fn=lambda logits, target: sequence_loss(logits, target, config.label_smoothing),
            schedule=StepSchedule(milestones=(config.lr_drop_at * total_steps / per_epoch,)),
            evals_per_epoch=config.evals_per_epoch,
            grad_clip=config.grad_clip,
            max_steps=total_steps,
        )
