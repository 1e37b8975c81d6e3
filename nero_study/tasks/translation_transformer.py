"""translation-transformer: the Nero paper's 6+6-layer transformer on Multi30k German -> English.

Evidence (Liu et al. 2021, arXiv 2102.07227, Sec. 5; code github.com/jxbz/nero, ``transformer-wmt16/``, a
fork of jadore801120's attention-is-all-you-need-pytorch): ``figure8.sh`` runs
``train.py -data_pkl m30k_deen_shr.pkl -embs_share_weight -proj_share_weight -label_smoothing -b 128
-epoch 100 -optim X -lr Y`` with the defaults ``d_model 512, d_inner_hid 2048, n_head 8, d_k = d_v = 64,
n_layers 6, dropout 0.1``; the data pickle is Multi30k de-en with a shared vocabulary
(``preprocess.py -share_vocab``: lowercased, max 100 tokens, min word count 3).

Model (``transformer/Models.py``, ``SubLayers.py``; the fork's README lists its changes): one embedding
matrix shared by encoder input, decoder input and the output projection (no bias, no logit scaling);
sinusoidal positions (table of 200) added to the unscaled embeddings, then dropout and a layer norm;
post-norm sub-layers ``LN(x + dropout(sublayer(x)))``; attention projections without biases, softmax of
``q k^T / sqrt(d_k)`` with dropout 0.1 on the attention weights; ReLU feed-forward with biases; every layer
norm without affine parameters (eps 1e-6, the fork's choice); Xavier-uniform init of every matrix.

Training as in ``train.py``:

- loss: label smoothing 0.1 in the fork's form (gold class ``1 - 0.1``, every other class
  ``0.1 / (vocab - 1)``), **summed** over the non-pad target tokens of the batch and back-propagated as the
  sum (``loss_reduction="sum"``; SGD's effective step therefore grows with the ~1,700 target tokens of a
  batch of 128 sentences). The training loss reported and checked for divergence is per token.
- schedule, per epoch (``LambdaLR`` stepped before each epoch): epoch ``e`` = 0..E-1 trains at
  ``lr * 2 * min((e + 1) / E, (E - e - 1) / E)``: for E = 100, 0.02 lr in epoch 0 rising linearly by
  0.02 per epoch to the full lr in epoch 49, then falling by 0.02 per epoch to 0 in the last epoch
  (which therefore does not move the weights, as in the paper's runs).
- batches of 128 sentence pairs (torchtext's ``BucketIterator``: pairs of similar length batched
  together, batches shuffled); here each epoch permutes the pairs with the trial's generator, sorts pools
  of 100 batches by length, cuts them into batches and shuffles the batches. Padding does not change a
  summed loss, so this only affects speed and the exact batch composition.
- metric: validation perplexity = exp(cross-entropy per non-pad target token, no smoothing), after each
  epoch. Chance is the perplexity of a uniform guess, the vocabulary size (about 10^4 words for Multi30k;
  the exact value is known only once the data is read, and each trial's step-0 evaluation measures it).

Data: :mod:`nero_study.data.parallel_text` (plain Multi30k text files under ``NERO_STUDY_DATA_DIR``, our
own lowercasing word/punctuation tokenizer instead of spaCy).

Budgets: ``smoke`` tiny model, a few steps (tests); ``proxy`` a CPU-minute: 2+2 layers of width 64 on the
first 2,000 training pairs for 4 epochs (lr factors 0.5, 1, 0.5, 0), validated on the first 200 pairs
(74 s measured on a 2-core machine at load average 10); ``paper`` the settings above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from nero_study.data.parallel_text import IdPair, load_multi30k, multi30k_files, pad_sequences
from nero_study.data.paths import data_dir, require_file
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import set_lr_factor


@dataclass(frozen=True)
class TranslationConfig:
    """One budget. ``layers`` is the depth of the encoder and of the decoder each; sizes in tokens/pairs."""

    epochs: int = 100
    batch_size: int = 128
    layers: int = 6
    d_model: int = 512
    heads: int = 8
    d_ff: int = 2048
    dropout: float = 0.1
    tied_embeddings: bool = True
    label_smoothing: float = 0.1
    loss_reduction: str = "sum"
    min_freq: int = 3
    max_len: int = 100
    eval_batch_size: int = 128
    evals_per_epoch: int = 1
    max_steps: int | None = None
    max_train_pairs: int | None = None
    max_valid_pairs: int | None = None


def triangular_factor(epoch: int, epochs: int) -> float:
    """The lr multiplier of 0-based ``epoch`` out of ``epochs``: ``2 * min((e + 1) / E, (E - e - 1) / E)``."""
    return 2.0 * min((epoch + 1) / epochs, (epochs - epoch - 1) / epochs)


def sinusoid_table(length: int, d_model: int) -> torch.Tensor:
    """``(length, d_model)``: feature ``j`` of position ``p`` is sin (even j) or cos (odd j) of
    ``p / 10000^(2 floor(j/2) / d_model)``."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(d_model) // 2).to(torch.float64) / d_model
    angles = position / torch.pow(10000.0, exponent)
    table = torch.where(torch.arange(d_model) % 2 == 0, torch.sin(angles), torch.cos(angles))
    return table.to(torch.float32)


class MultiHeadAttention(nn.Module):
    """Post-norm attention sub-layer: ``LN(x + dropout(W_o attention(W_q x, W_k m, W_v m)))``."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = d_model // heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.attention_dropout = nn.Dropout(dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-6, elementwise_affine=False)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, queries, d) attends over ``memory`` (batch, keys, d); ``mask`` True = may attend."""
        batch, queries, d_model = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, -1, self.heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(memory)), split(self.value(memory))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(~mask, -1e9)
        weights = self.attention_dropout(scores.softmax(dim=-1))
        attended = (weights @ v).transpose(1, 2).reshape(batch, queries, d_model)
        return self.norm(x + self.dropout(self.out(attended)))


class FeedForward(nn.Module):
    """Post-norm ReLU feed-forward sub-layer: ``LN(x + dropout(W_2 relu(W_1 x + b_1) + b_2))``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_model, d_ff)
        self.output = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, eps=1e-6, elementwise_affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.output(F.relu(self.hidden(x)))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(self.self_attention(x, x, mask))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.cross_attention = MultiHeadAttention(d_model, heads, dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        x = self.self_attention(x, x, self_mask)
        return self.feed_forward(self.cross_attention(x, memory, memory_mask))


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer over one joint vocabulary; ``forward(source, target_in)`` gives logits
    ``(batch, target length, vocab)`` for the next target token at each position."""

    def __init__(self, vocab_size: int, pad_id: int, config: TranslationConfig) -> None:
        super().__init__()
        if config.d_model % config.heads != 0:
            raise ValueError(f"Invalid heads: {config.heads}; must divide d_model {config.d_model}")
        self.pad_id = pad_id
        d_model, dropout = config.d_model, config.dropout
        self.target_embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        if config.tied_embeddings:
            self.source_embedding = self.target_embedding
            self.projection: nn.Linear | None = None
        else:
            self.source_embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
            self.projection = nn.Linear(d_model, vocab_size, bias=False)
        self.register_buffer(
            "positions", sinusoid_table(max(200, config.max_len + 2), d_model), persistent=False
        )
        self.dropout = nn.Dropout(dropout)
        self.source_norm = nn.LayerNorm(d_model, eps=1e-6, elementwise_affine=False)
        self.target_norm = nn.LayerNorm(d_model, eps=1e-6, elementwise_affine=False)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, config.heads, config.d_ff, dropout) for _ in range(config.layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, config.heads, config.d_ff, dropout) for _ in range(config.layers)
        )
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def _embed(self, embedding: nn.Embedding, norm: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        return norm(self.dropout(embedding(ids) + self.positions[: ids.shape[1]]))

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        source_mask = (source != self.pad_id)[:, None, None, :]
        length = target_in.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=target_in.device).tril()
        target_mask = (target_in != self.pad_id)[:, None, None, :] & causal
        memory = self._embed(self.source_embedding, self.source_norm, source)
        for layer in self.encoder:
            memory = layer(memory, source_mask)
        x = self._embed(self.target_embedding, self.target_norm, target_in)
        for layer in self.decoder:
            x = layer(x, memory, target_mask, source_mask)
        if self.projection is None:
            return F.linear(x, self.target_embedding.weight)
        return self.projection(x)


def smoothed_token_losses(logits: torch.Tensor, gold: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per-token cross-entropy against ``(1 - smoothing)`` on the gold class and ``smoothing / (V - 1)`` on
    every other class (the paper's label smoothing); ``smoothing = 0`` is plain cross-entropy, in nats."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    gold_log_prob = log_probs.gather(-1, gold[..., None]).squeeze(-1)
    if smoothing == 0:
        return -gold_log_prob
    others = log_probs.sum(dim=-1) - gold_log_prob
    return -((1.0 - smoothing) * gold_log_prob + smoothing / (logits.shape[-1] - 1) * others)


def length_bucketed_batches(
    pairs: list[IdPair], batch_size: int, generator: torch.Generator, pool_batches: int = 100
) -> list[torch.Tensor]:
    """One epoch's batches of pair indices: a seeded permutation, pools of ``pool_batches`` batches sorted
    by (source, target) length, cut into batches, and the batches shuffled."""
    order = torch.randperm(len(pairs), generator=generator)
    lengths = torch.tensor([len(src) * 10_000 + len(tgt) for src, tgt in pairs])
    batches: list[torch.Tensor] = []
    pool = batch_size * pool_batches
    for start in range(0, len(pairs), pool):
        chunk = order[start : start + pool]
        chunk = chunk[torch.sort(lengths[chunk], stable=True).indices]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    shuffle = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in shuffle]


def collate(pairs: list[IdPair], index: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``(source, target)`` batches ``(batch, length)`` of the pairs at ``index``."""
    chosen = [pairs[i] for i in index.tolist()]
    return pad_sequences([s for s, _ in chosen], pad_id), pad_sequences([t for _, t in chosen], pad_id)


@torch.no_grad()
def validation_perplexity(
    model: Seq2SeqTransformer, pairs: list[IdPair], batch_size: int, device: torch.device
) -> float:
    """exp(cross-entropy per non-pad target token) over ``pairs``, teacher-forced, no label smoothing."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    total, words = 0.0, 0
    for start in range(0, len(order), batch_size):
        source, target = collate(pairs, torch.tensor(order[start : start + batch_size]), model.pad_id)
        source, target = source.to(device), target.to(device)
        logits = model(source, target[:, :-1])
        gold = target[:, 1:]
        keep = gold != model.pad_id
        total += float(smoothed_token_losses(logits, gold, 0.0)[keep].sum())
        words += int(keep.sum())
    model.train(was_training)
    mean = total / max(1, words)
    return math.exp(mean) if mean < 700 else math.inf


class TranslationTransformer(Task):
    name: ClassVar[str] = "translation-transformer"
    description: ClassVar[str] = (
        "The paper's 6+6-layer transformer (d 512, tied embeddings, label smoothing 0.1) on Multi30k "
        "de-en, 100 epochs, triangular lr; validation perplexity"
    )
    metric_name: ClassVar[str] = "validation perplexity"
    lower_is_better: ClassVar[bool] = True
    chance_metric: ClassVar[float] = 10_000.0
    kind: ClassVar[str] = "paper"
    default_device: ClassVar[str] = "auto"
    budgets: ClassVar[dict[str, Any]] = {
        "smoke": TranslationConfig(
            epochs=3, batch_size=4, layers=1, d_model=16, heads=2, d_ff=32, min_freq=1, eval_batch_size=8,
            evals_per_epoch=2, max_steps=6,
        ),
        "proxy": TranslationConfig(
            epochs=4, batch_size=32, layers=2, d_model=64, heads=4, d_ff=128, eval_batch_size=100,
            evals_per_epoch=2, max_train_pairs=2_000, max_valid_pairs=200,
        ),
        "paper": TranslationConfig(),
    }

    def config(self, budget: str, options: dict[str, Any] | None = None) -> TranslationConfig:
        config = super().config(budget, options)
        if config.loss_reduction not in ("sum", "mean"):
            raise TaskConfigError(f"Invalid loss_reduction: {config.loss_reduction!r}; valid: sum, mean")
        if config.d_model % config.heads != 0:
            raise TaskConfigError(f"Invalid heads: {config.heads}; must divide d_model {config.d_model}")
        if not 0.0 <= config.label_smoothing < 1.0:
            raise TaskConfigError(f"Invalid label_smoothing: {config.label_smoothing}; must be in [0, 1)")
        return config

    def check_data(self, config: TranslationConfig) -> None:
        for source, target in multi30k_files(data_dir("Multi30k (multi30k/{train,val}.{de,en})")).values():
            require_file(source, "a Multi30k German text file (one sentence per line)")
            require_file(target, "a Multi30k English text file (one sentence per line)")

    def train(self, config: TranslationConfig, ctx: TrialContext) -> None:
        corpus = load_multi30k(data_dir("Multi30k"), min_freq=config.min_freq, max_len=config.max_len)
        train_pairs = corpus.train[: config.max_train_pairs]
        valid_pairs = corpus.valid[: config.max_valid_pairs]
        pad_id = corpus.vocabulary.pad_id
        device = ctx.device
        model = Seq2SeqTransformer(len(corpus.vocabulary), pad_id, config).to(device)
        optimizer = ctx.build_optimizer(model.parameters())
        base_lrs = [group["lr"] for group in optimizer.param_groups]

        steps_per_epoch = math.ceil(len(train_pairs) / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        if config.max_steps is not None:
            total_steps = min(total_steps, config.max_steps)
        eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))

        def evaluate() -> float:
            return validation_perplexity(model, valid_pairs, config.eval_batch_size, device)

        step, last_loss = 0, math.nan
        ctx.evaluate(step=0, epoch=0.0, train_loss=math.nan, metric=evaluate())
        model.train()
        for epoch in range(config.epochs):
            if step >= total_steps:
                break
            set_lr_factor(optimizer, base_lrs, triangular_factor(epoch, config.epochs))
            for index in length_bucketed_batches(train_pairs, config.batch_size, ctx.generator):
                if step >= total_steps:
                    break
                source, target = collate(train_pairs, index, pad_id)
                source, target = source.to(device), target.to(device)
                gold = target[:, 1:]
                keep = gold != pad_id
                losses = smoothed_token_losses(model(source, target[:, :-1]), gold, config.label_smoothing)
                loss_sum = losses[keep].sum()
                words = int(keep.sum())
                loss = loss_sum if config.loss_reduction == "sum" else loss_sum / max(1, words)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                last_loss = ctx.check_loss(loss_sum.detach() / max(1, words))
                if step % eval_every == 0 and step < total_steps:
                    ctx.evaluate(
                        step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate()
                    )
        ctx.evaluate(step=step, epoch=step / steps_per_epoch, train_loss=last_loss, metric=evaluate())
