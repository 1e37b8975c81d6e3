"""wikitext2-transformer: the Nero paper's word-level transformer language model on WikiText-2.

Evidence (Liu et al. 2021, arXiv 2102.07227, Sec. 5; code github.com/jxbz/nero, ``wikitext2/``, which
builds on the PyTorch ``word_language_model`` example): ``figure7.sh`` runs
``main.py --epochs 20 --model Transformer --optim X --lr Y --seed S`` with the script's defaults
``--emsize 200 --nhid 200 --nlayers 2 --nhead 2 --dropout 0.2 --bptt 35 --batch_size 20``; evaluation batch
size 10; loss NLL of a log-softmax.

Metric (``wikitext2/main.py`` lines 270-318): the script evaluates the validation perplexity after every
epoch and saves the model whenever it is the best so far (``if not best_val_loss or val_loss <
best_val_loss``); after training it reloads that best-validation checkpoint, evaluates it on the *test*
split and appends the test perplexity to ``logs/paper/test_ppls.txt``: the number the paper reported. So
here the curve holds the validation perplexity after each evaluation (``curve_metric_name``) and the
trial's ``metric`` (and ``best_metric``) is the test perplexity of the best-validation checkpoint
(:meth:`TrialContext.report_final`); the model at initialisation is not a checkpoint candidate (the script
compares epochs only), and ``initial_metric`` is the test perplexity at initialisation.

Model (``wikitext2/model.py``): embedding scaled by sqrt(d) (init U(-0.1, 0.1)), sinusoidal positions with
dropout, ``nlayers`` post-norm encoder layers (ReLU feed-forward) under a causal mask, linear decoder
(init U(-0.1, 0.1), bias 0), untied. The encoder layers start from identical weights: the model builds one
``TransformerEncoderLayer`` and ``TransformerEncoder(encoder_layers, nlayers)`` deep-copies it
(``model.py`` lines 120-121), so here too the first layer is built and copied. The paper's layers come
from a patched ``TransformerEncoderLayer`` whose layer norm is on only with ``--norm``, which
``figure7.sh`` does not pass: ``layer_norm=False`` here (set it to True for torch's standard post-norm
layer).

Schedule and clipping, as the paper's script does them:

- the lr is divided by 10 after epoch 10 (``if epoch == (args.epochs//(4.0/2.0))``, ``main.py`` line 292,
  an ``if`` of its own after the checkpoint test) for the remaining 10 epochs.
- the gradient norm is clipped at 0.25 for SGD only (``if args.optim=='sgd'``, lines 235-237):
  ``grad_clip`` applies to the optimisers in ``grad_clip_optimizers``.
- optimisers (lines 152-159): SGD ``momentum=args.momentum`` (default 0), Adam and LAMB
  ``betas=(args.momentum, args.beta)`` = (0, 0.999) with their default eps, Nero with its defaults: the
  registry's ``paper`` preset, no task overrides. (As released, the script's log-directory line for the
  non-Nero optimisers reads ``args.gnorm``, which its parser does not define.)

Data: WikiText-2 token files under ``NERO_STUDY_DATA_DIR`` (:mod:`nero_study.data.wikitext`), batches in
stream order (no shuffling), as in the paper. Chance perplexity = vocabulary size (33,278).

Budgets: ``smoke`` a tiny model for a few steps (tests); ``proxy`` what a CPU affords of the paper's model
in about a minute (the 33k-word softmax dominates): 60 steps (2% of an epoch), evaluated every 20 steps
on the first 4,000 validation tokens (144 s measured on a 2-core machine at load average 10) — a
pipeline check, not a result (``text-lm`` is the CPU stand-in);
``paper`` the exact settings above (GPU scale: 20 epochs of ~2,980 steps).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from nero_study.data.paths import data_dir, require_file
from nero_study.data.wikitext import (
    batchify,
    bptt_chunks,
    count_bptt_chunks,
    load_token_corpus,
    wikitext2_files,
)
from nero_study.tasks.base import Task, TaskConfigError, TrialContext
from nero_study.tasks.common import Batch, StepSchedule, train_supervised

WIKITEXT2_VOCAB_SIZE = 33_278


@dataclass(frozen=True)
class WikiText2Config:
    """One budget; sizes in tokens, ``lr_drop_epoch`` in epochs (the lr is ``* lr_drop_factor`` after it)."""

    epochs: int = 20
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    d_model: int = 200
    heads: int = 2
    d_ff: int = 200
    layers: int = 2
    dropout: float = 0.2
    layer_norm: bool = False
    lr_drop_epoch: float = 10.0
    lr_drop_factor: float = 0.1
    grad_clip: float | None = 0.25
    grad_clip_optimizers: tuple[str, ...] = ("sgd",)
    evals_per_epoch: int = 1
    eval_every_steps: int | None = None  # overrides evals_per_epoch (cadence independent of corpus size)
    max_steps: int | None = None
    max_eval_tokens: int | None = None


def sinusoid_table(length: int, d_model: int) -> torch.Tensor:
    """``(length, d_model)`` sinusoidal positions: sin on even, cos on odd features (Vaswani et al.)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class EncoderLayer(nn.Module):
    """Post-norm self-attention + ReLU feed-forward layer (torch's ``TransformerEncoderLayer`` layout),
    its two layer norms replaced by identities when ``layer_norm`` is off. Inputs ``(length, batch, d)``."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, layer_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm1: nn.Module = nn.LayerNorm(d_model) if layer_norm else nn.Identity()
        self.norm2: nn.Module = nn.LayerNorm(d_model) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.self_attn(x, x, x, attn_mask=mask, need_weights=False)[0]
        x = self.norm1(x + self.dropout1(attended))
        x = self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return x


class WordTransformerLM(nn.Module):
    """The paper's WikiText-2 model: ids ``(length, batch)`` -> next-word logits ``(length, batch, vocab)``."""

    def __init__(self, vocab_size: int, config: WikiText2Config, max_length: int = 5000) -> None:
        super().__init__()
        self.d_model = config.d_model
        self.embedding = nn.Embedding(vocab_size, config.d_model)
        self.register_buffer("positions", sinusoid_table(max_length, config.d_model), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        layer = EncoderLayer(config.d_model, config.heads, config.d_ff, config.dropout, config.layer_norm)
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(config.layers))
        self.decoder = nn.Linear(config.d_model, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[0]
        future = torch.ones(length, length, dtype=torch.bool, device=ids.device).triu(1)  # True = hidden
        x = self.embedding(ids) * math.sqrt(self.d_model)
        x = self.dropout(x + self.positions[:length, None, :])
        for layer in self.layers:
            x = layer(x, future)
        return self.decoder(x)


def next_word_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per word of ``logits`` (length, batch, vocab) against ``targets``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def perplexity(mean_nats: float) -> float:
    """``exp(mean_nats)``; infinite (not an overflow error) for absurd losses so that the run diverges."""
    return math.exp(mean_nats) if mean_nats < 700 else math.inf


@torch.no_grad()
def evaluate_perplexity(model: nn.Module, source: torch.Tensor, bptt: int) -> float:
    """Perplexity over a batchified stream, each window's mean loss weighted by its length (paper)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for inputs, targets in bptt_chunks(source, bptt):
        total += len(inputs) * float(next_word_loss(model(inputs), targets))
    model.train(was_training)
    return perplexity(total / (source.size(0) - 1))


class WikiText2Transformer(Task):
    name: ClassVar[str] = "wikitext2-transformer"
    description: ClassVar[str] = (
        "The paper's 2-layer word-level transformer LM on WikiText-2 (bptt 35, batch 20, 20 epochs, "
        "lr /10 at epoch 10); test perplexity of the best-validation checkpoint"
    )
    metric_name: ClassVar[str] = "test perplexity"
    curve_metric_name: ClassVar[str | None] = "validation perplexity"
    lower_is_better: ClassVar[bool] = True
    chance_metric: ClassVar[float] = float(WIKITEXT2_VOCAB_SIZE)
    kind: ClassVar[str] = "paper"
    default_device: ClassVar[str] = "auto"
    budgets: ClassVar[dict[str, Any]] = {
        "smoke": WikiText2Config(
            epochs=2, batch_size=4, eval_batch_size=2, bptt=8, d_model=16, heads=2, d_ff=16, layers=1,
            lr_drop_epoch=1.0, eval_every_steps=2, max_steps=6,
        ),
        "proxy": WikiText2Config(epochs=1, eval_every_steps=20, max_steps=60, max_eval_tokens=4_000),
        "paper": WikiText2Config(),
    }

    def config(self, budget: str, options: dict[str, Any] | None = None) -> WikiText2Config:
        config = super().config(budget, options)
        if config.d_model % config.heads != 0:
            raise TaskConfigError(f"Invalid heads: {config.heads}; must divide d_model {config.d_model}")
        if isinstance(config.grad_clip_optimizers, str):
            config = dataclasses.replace(config, grad_clip_optimizers=(config.grad_clip_optimizers,))
        return config

    def check_data(self, config: WikiText2Config) -> None:
        for path in wikitext2_files(data_dir("WikiText-2 (wikitext-2/wiki.*.tokens)")).values():
            require_file(path, "a WikiText-2 token file")

    def train(self, config: WikiText2Config, ctx: TrialContext) -> None:
        corpus = load_token_corpus(wikitext2_files(data_dir("WikiText-2")))
        valid = corpus.valid if config.max_eval_tokens is None else corpus.valid[: config.max_eval_tokens]
        test = corpus.test if config.max_eval_tokens is None else corpus.test[: config.max_eval_tokens]
        train_data = batchify(corpus.train, config.batch_size).to(ctx.device)
        valid_data = batchify(valid, config.eval_batch_size).to(ctx.device)
        test_data = batchify(test, config.eval_batch_size).to(ctx.device)
        steps_per_epoch = count_bptt_chunks(train_data.size(0), config.bptt)
        model = WordTransformerLM(len(corpus.vocabulary), config)

        def batches(epoch: int) -> Iterator[Batch]:
            return bptt_chunks(train_data, config.bptt)

        evals_per_epoch = config.evals_per_epoch
        if config.eval_every_steps is not None:
            evals_per_epoch = max(1, steps_per_epoch // config.eval_every_steps)
        clip = config.grad_clip if ctx.spec.optimizer in config.grad_clip_optimizers else None
        checkpoint = BestValidationCheckpoint(model)

        def evaluate() -> float:
            return checkpoint.offer(evaluate_perplexity(model, valid_data, config.bptt))

        initial_test = evaluate_perplexity(model, test_data, config.bptt)
        train_supervised(
            ctx,
            model=model,
            batches=batches,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            evaluate=evaluate,
            loss_fn=next_word_loss,
            schedule=StepSchedule(milestones=(config.lr_drop_epoch,), gamma=config.lr_drop_factor),
            evals_per_epoch=evals_per_epoch,
            grad_clip=clip,
            max_steps=config.max_steps,
        )
        checkpoint.restore()
        ctx.report_final(evaluate_perplexity(model, test_data, config.bptt), initial=initial_test)


class BestValidationCheckpoint:
    """Keeps a copy of the model's weights at its best validation perplexity after training began.

    The first perplexity offered is the model at initialisation, which the paper's script never saves (it
    checkpoints after epochs only); from the second on, a strictly lower one replaces the copy.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.offers = 0
        self.best = math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, validation_perplexity: float) -> float:
        """Record one evaluation; returns the perplexity unchanged (for the learning curve)."""
        self.offers += 1
        if self.offers > 1 and validation_perplexity < self.best:
            self.best = validation_perplexity
            self.state = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        return validation_perplexity

    def restore(self) -> None:
        """Load the best copy back into the model (no-op when training never evaluated after step 0)."""
        if self.state is not None:
            self.model.load_state_dict(self.state)
