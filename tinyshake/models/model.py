"""The lecture's models, written as the video writes them: read this file top to bottom.

Every stage of the ladder is built from these classes, one :class:`ModelConfig`
each: the bigram is :class:`BigramLanguageModel`, and every later stage is a
:class:`GPTLanguageModel` whose blocks switch on what the lecture added one step
at a time (a feed-forward, residual connections, projections, LayerNorm,
dropout). The parameters keep the lecture's names, so a run's weights load
into the lecture's own gpt.py (``blocks.0.sa.heads.0.key.weight``, ...).

Fidelity: parameters are created in the lecture code's order from the same
random stream, so after ``torch.manual_seed(1337)`` a model starts from exactly
the lecture's weights.

Nothing here is tuned for speed. :mod:`tinyshake.models.speed` swaps some of these
modules for faster ones that compute the same thing (one product for every
head, oneDNN on a CPU, a KV cache), the way BetterTransformer swaps modules;
``tinyshake train --plain`` trains this code exactly as written. The ``modern``
preset's pieces (rotary positions, RMSNorm, QK-norm, ReLU²) live in
:mod:`tinyshake.models.modern`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.models import modern


@dataclass
class ModelConfig:
    """Everything that shapes a model. The stage table (stages.py) fills it in."""

    vocab_size: int = 65
    block_size: int = 8  # the longest context the model sees
    arch: str = "gpt"  # "bigram" or "gpt"
    n_embd: int = 32
    n_head: int = 4
    n_layer: int = 1
    ffwd: str = "none"  # "none", "simple" (Linear + ReLU) or "wide" (4x, with a projection back)
    proj: bool = False  # attention's output projection
    residual: bool = False
    layernorm: bool = False
    dropout: float = 0.0
    init_std: Optional[float] = None  # None keeps PyTorch's default init, as the early stages do
    # What the attention scores are scaled by, to the power -0.5: "head_size" as the lecture's repository does now,
    # or "n_embd", the width C, as the code in the video did (the gpt-video stage).
    attn_scale: str = "head_size"
    # Beyond the lecture (the `modern` preset, see modern.py): rotary positions, RMSNorm, QK-norm, ReLU², zero-init.
    pos: str = "learned"  # "learned" (a position table, as the lecture) or "rope"
    norm: str = "layernorm"  # "layernorm" or "rmsnorm", used where layernorm is on
    activation: str = "relu"  # "relu" or "relu2"
    qk_norm: bool = False
    zero_init_proj: bool = False
    rope_base: float = 10000.0

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Head(nn.Module):
    """One head of self-attention."""

    def __init__(self, config: ModelConfig, head_size: int) -> None:
        super().__init__()
        self.key = nn.Linear(config.n_embd, head_size, bias=False)
        self.query = nn.Linear(config.n_embd, head_size, bias=False)
        self.value = nn.Linear(config.n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)))
        self.dropout = nn.Dropout(config.dropout)
        # hs**-0.5 keeps the softmax diffuse at initialisation (the video's first cut used C**-0.5)
        self.scale = (config.n_embd if config.attn_scale == "n_embd" else head_size) ** -0.5
        self.rotate = modern.QueryKeyTransform(config.qk_norm, config.rope_base if config.pos == "rope" else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # input of size (batch, time-step, channels), output of size (batch, time-step, head size)
        B, T, C = x.shape
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        q, k = self.rotate(q, k)  # the modern preset only: QK-norm and rotary positions; the lecture's q, k pass
        # compute attention scores ("affinities")
        wei = q @ k.transpose(-2, -1) * self.scale  # (B, T, hs) @ (B, hs, T) -> (B, T, T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # (B, T, T): no peeking at the future
        wei = F.softmax(wei, dim=-1)  # (B, T, T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        v = self.value(x)  # (B, T, hs)
        out = wei @ v  # (B, T, T) @ (B, T, hs) -> (B, T, hs)
        return out


class MultiHeadAttention(nn.Module):
    """Multiple heads of self-attention in parallel, their outputs concatenated (and projected)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = nn.ModuleList([Head(config, config.head_size) for _ in range(config.n_head)])
        # the multihead stage concatenates only; the projection comes with the residual stage
        self.proj = nn.Linear(config.head_size * config.n_head, config.n_embd) if config.proj else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([h(x) for h in self.heads], dim=-1)  # (B, T, n_head * hs)
        out = self.dropout(self.proj(out))
        return out


class FeedForward(nn.Module):
    """A simple linear layer followed by a non-linearity: each token thinks on what it gathered."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n_embd = config.n_embd
        if config.ffwd == "wide":  # from the residual stage on: 4x wider, projected back, with dropout
            self.net = nn.Sequential(
                nn.Linear(n_embd, 4 * n_embd),
                activation(config),
                nn.Linear(4 * n_embd, n_embd),
                nn.Dropout(config.dropout),
            )
        else:
            self.net = nn.Sequential(nn.Linear(n_embd, n_embd), activation(config))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Transformer block: communication (attention) followed by computation (feed-forward)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.sa = MultiHeadAttention(config)
        self.ffwd = FeedForward(config) if config.ffwd != "none" else nn.Identity()
        self.ln1 = norm(config)
        self.ln2 = norm(config)
        self.residual = config.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:  # the blocks stage: deep, but without the residual pathway it trains badly
            return self.ffwd(self.ln2(self.sa(self.ln1(x))))
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x


def norm(config: ModelConfig) -> nn.Module:
    """The lecture's LayerNorm (RMSNorm for the modern preset), or nothing before the layernorm stage."""
    if not config.layernorm:
        return nn.Identity()
    return modern.RMSNorm(config.n_embd) if config.norm == "rmsnorm" else nn.LayerNorm(config.n_embd)


def activation(config: ModelConfig) -> nn.Module:
    """The lecture's ReLU (ReLU² for the modern preset)."""
    return modern.ReLUSquared() if config.activation == "relu2" else nn.ReLU()


class LanguageModel(nn.Module):
    """What the bigram and the GPT share: the lecture's generate."""

    config: ModelConfig

    def generate(self, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens
            idx_cond = idx[:, -self.config.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step
            logits = logits[:, -1, :]  # becomes (B, C)
            # apply softmax to get probabilities
            probs = F.softmax(logits, dim=-1)  # (B, C)
            # sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
            # append sampled index to the running sequence
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx


def lm_loss(logits: torch.Tensor, targets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Mean cross-entropy of the next-token predictions, as the lecture computes it."""
    if targets is None:
        return None
    B, T, C = logits.shape
    return F.cross_entropy(logits.view(B * T, C), targets.reshape(B * T))


class BigramLanguageModel(LanguageModel):
    """Each token reads the logits for the next token straight off a lookup table."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits = self.token_embedding_table(idx)  # (B, T, C)
        return logits, lm_loss(logits, targets)


class GPTLanguageModel(LanguageModel):
    """Token and position embeddings, a stack of blocks, a final LayerNorm, and the language-model head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        # the modern preset's rotary positions (in each head) need no table
        self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd) if config.pos == "learned" \
            else None
        self.blocks = nn.Sequential(*[Block(config) for _ in range(config.n_layer)])
        self.ln_f = norm(config)  # final layer norm
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        if config.init_std is not None:  # from the gpt stage on: better init, as the lecture's gpt.py does
            self.apply(self._init_weights)
        if config.zero_init_proj:
            modern.zero_init_projections(self)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def forward(self, idx: torch.Tensor,
                targets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        B, T = idx.shape
        # idx and targets are both (B, T) tensors of integers
        x = self.token_embedding_table(idx)  # (B, T, C)
        if self.position_embedding_table is not None:
            x = x + self.position_embedding_table(torch.arange(T, device=idx.device))  # (T, C), broadcast
        x = self.blocks(x)  # (B, T, C)
        x = self.ln_f(x)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        return logits, lm_loss(logits, targets)


def build(config: ModelConfig) -> LanguageModel:
    """Create the model a config describes, drawing its weights from the current random stream."""
    if config.arch == "bigram":
        return BigramLanguageModel(config)
    return GPTLanguageModel(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_token(config: ModelConfig, training: bool = True) -> float:
    """Approximate matmul FLOPs per token: 2 per weight, plus attention's scores and mixing; x3 to train."""
    if config.arch == "bigram":
        return 0.0
    n, hs, t = config.n_embd, config.head_size, config.block_size
    per_layer = 2 * 3 * n * n + (2 * n * n if config.proj else 0)
    per_layer += {"none": 0, "simple": 2 * n * n, "wide": 16 * n * n}[config.ffwd]
    per_layer += 2 * 2 * config.n_head * hs * t / 2  # causal: half the T x T scores on average
    forward = config.n_layer * per_layer + 2 * n * config.vocab_size
    return forward * (3 if training else 1)


__all__ = [
    "ModelConfig",
    "Head",
    "MultiHeadAttention",
    "FeedForward",
    "Block",
    "LanguageModel",
    "BigramLanguageModel",
    "GPTLanguageModel",
    "build",
    "count_parameters",
    "flops_per_token",
]
