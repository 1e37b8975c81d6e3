"""Small pre-LayerNorm transformer pieces for the CPU proxy tasks ``text-lm`` and ``seq2seq``.

Kept apart from the paper's transformer tasks on purpose: these are GPT-style blocks (LayerNorm before
each sub-layer, GELU feed-forward, learned positions, no dropout by default) sized for a CPU minute.
Masks are boolean with ``True`` = may attend, broadcastable to ``(batch, heads, query, key)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """``(length, length)`` bool mask: query ``i`` may attend to keys ``0..i``."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def key_padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``(batch, 1, 1, length)`` bool mask that hides padding keys of ``ids`` (batch, length)."""
    return (ids != pad_id)[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``memory`` (``x`` itself for self-attention)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads != 0:
            raise ValueError(f"Invalid heads: {heads}; must divide d_model {d_model}")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        memory = x if memory is None else memory
        q, k, v = self._split(self.query(x)), self._split(self.key(memory)), self._split(self.value(memory))
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, length, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    """Position-wise ``Linear -> GELU -> Linear``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.drop(F.gelu(self.up(x))))


class TransformerBlock(nn.Module):
    """Pre-LN block: self-attention, optional cross-attention over ``memory``, feed-forward; all residual."""

    def __init__(
        self, d_model: int, heads: int, d_ff: int, dropout: float = 0.0, *, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attention = Attention(d_model, heads, dropout)
        self.norm_cross = nn.LayerNorm(d_model) if cross_attention else None
        self.cross_attention = Attention(d_model, heads, dropout) if cross_attention else None
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.self_attention(self.norm_self(x), mask=self_mask))
        if self.cross_attention is not None and self.norm_cross is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs the encoder output as memory")
            x = x + self.drop(self.cross_attention(self.norm_cross(x), memory, mask=memory_mask))
        return x + self.drop(self.feed_forward(self.norm_ff(x)))


class Embeddings(nn.Module):
    """Token plus learned position embeddings, both initialised N(0, 0.02^2) as in GPT-2."""

    def __init__(self, vocab_size: int, d_model: int, max_length: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_length = max_length
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_length, d_model)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds the model's maximum {self.max_length}")
        positions = torch.arange(length, device=ids.device)
        return self.drop(self.token(ids) + self.position(positions))


def sequence_perplexity(total_nll: float, tokens: int) -> float:
    """``exp(mean negative log-likelihood per token)``; inf when the mean overflows."""
    mean = total_nll / max(1, tokens)
    return math.exp(mean) if mean < 700 else math.inf
