"""The lecture's models, from the bigram table to the GPT, in one module.

Every stage of the lecture's ladder is one :class:`ModelConfig`: the bigram is
its own small class, and every later stage is a :class:`GPTLanguageModel` whose
blocks switch on what the lecture added one step at a time (a feed-forward,
residual connections, projections, LayerNorm, dropout).

Fidelity: parameters are created in the lecture code's order from the same
random stream, so with ``torch.manual_seed(1337)`` a model starts from exactly
the lecture's weights. Speed: the heads of a :class:`MultiHeadAttention` share
one fused weight and one call to ``scaled_dot_product_attention``; the weight is
still drawn head by head, key, query, value, as the lecture's ``Head`` modules
draw theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import onednn

FFWD_KINDS = ("none", "simple", "wide")


@dataclass
class ModelConfig:
    """Everything that shapes a model. The stage table (stages.py) fills it in."""

    vocab_size: int = 65
    block_size: int = 8
    arch: str = "gpt"  # "bigram" or "gpt"
    n_embd: int = 32
    n_head: int = 4
    n_layer: int = 1
    ffwd: str = "none"  # "none", "simple" (Linear+ReLU) or "wide" (4x with a projection back)
    proj: bool = False  # attention output projection
    residual: bool = False
    layernorm: bool = False
    dropout: float = 0.0
    init_std: Optional[float] = None  # None keeps PyTorch's default init, as the early stages do
    # What the attention scores are scaled by, to the power -0.5: "head_size" as the lecture's repository does now,
    # or "n_embd", the width C, as the code in the video did (the gpt-video stage).
    attn_scale: str = "head_size"
    # Beyond the lecture (the `modern` preset): rotary positions, RMSNorm, QK-norm, ReLU², zero-init projections.
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


# --------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of every layer for the positions seen so far, so a new token costs one position.

    ``pos`` is how many positions are stored; the learned position table means
    positions are absolute, so the cache can never hold more than ``block_size``.
    """

    def __init__(self, n_layer: int, window: Optional[int] = None) -> None:
        self.keys: list[Optional[torch.Tensor]] = [None] * n_layer
        self.values: list[Optional[torch.Tensor]] = [None] * n_layer
        self.pos = 0
        self.window = window  # with rotary positions the cache slides: only the last `window` positions stay

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys and values (B, H, T, hs) and return everything cached for the layer."""
        old_k, old_v = self.keys[layer], self.values[layer]
        if old_k is not None and old_v is not None:
            k, v = torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2)
        if self.window is not None and k.size(2) > self.window:
            k, v = k[:, :, -self.window:], v[:, :, -self.window:]
        self.keys[layer], self.values[layer] = k, v
        return k, v


# --------------------------------------------------------------------------- the ladder's pieces


SMALL_ATTENTION = 128  # positions up to which, on a CPU, plain batched matmuls beat the fused kernel (tuning.apply sets it from a measurement)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, causal: bool,
           future: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked to the past) @ v, for every head at once; scale defaults to head_size^-0.5.

    On a GPU, and for long contexts on a CPU, one ``scaled_dot_product_attention``
    call. For short contexts on a CPU its fixed costs dominate: there the
    lecture's own three steps, batched over the heads, run faster (up to
    :data:`SMALL_ATTENTION` positions, measured on the machine by :mod:`tinyshake.tuning`).
    ``future`` is :func:`future_mask` of at least the context's size, if the
    caller keeps one.
    """
    scale = q.size(-1) ** -0.5 if scale is None else scale
    if q.device.type == "cpu" and k.size(-2) <= SMALL_ATTENTION:
        return batched_attention(q, k, v, dropout, causal, future, scale)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scale)


def batched_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, causal: bool,
                      future: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """The lecture's three steps (scores, softmax, weighted sum) as batched matmuls over every head."""
    queries, keys = q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2)
    if causal:
        T = q.size(-2)
        mask = future[:T, :T] if future is not None and len(future) >= T else future_mask(T)
        wei = torch.baddbmm(mask.to(q.dtype), queries, keys, alpha=scale)
    else:  # a new token after a cached prefix may look at every key
        wei = torch.bmm(queries, keys).mul_(scale)
    wei = F.dropout(wei.softmax(dim=-1), dropout) if dropout > 0 else wei.softmax(dim=-1)
    return torch.bmm(wei, v.flatten(0, 1)).view(q.shape)


def attention_weights(q: torch.Tensor, k: torch.Tensor, future: Optional[torch.Tensor],
                      scale: float) -> torch.Tensor:
    """The weights :func:`attend` mixes the values by, (B, H, Tq, Tk): each query's row sums to 1.

    ``future`` is the mask to add before the softmax, or None when every key may be seen.
    """
    scores = q @ k.transpose(-2, -1) * scale
    return (scores if future is None else scores + future.to(scores.dtype)).softmax(dim=-1)


def future_mask(size: int) -> torch.Tensor:
    """0 where a query may look, -inf where it would peek at the future: added to the scores before softmax."""
    return torch.full((size, size), float("-inf")).triu(1)


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate channel pairs of q or k (B, H, T, hs) by angles proportional to their absolute positions.

    Dot products of rotated vectors depend only on the distance between positions,
    so attention needs no position table, and a cache of rotated keys stays valid
    as the window slides.
    """
    half = x.size(-1) // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, half)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class _RMSNorm(torch.autograd.Function):
    """x / rms(x) · weight over the last dimension, in about half the passes over memory of autograd's chain.

    ``F.rms_norm`` runs on a CPU as six separate ops (square, mean, add, rsqrt,
    two products), each read and written back, and autograd retraces every one
    of them. Here the forward is one norm and two products, and the backward is
    the closed form ``rstd · (g - x̂ · mean(g · x̂))`` with ``g = grad · weight``.
    The result agrees with ``F.rms_norm`` to float rounding (tests/test_model.py).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: Optional[torch.Tensor], eps: float) -> torch.Tensor:
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.size(-1))
        rstd = mean_square.add_(eps).rsqrt_()
        normed = x * rstd
        ctx.save_for_backward(normed, rstd, weight)
        return normed * weight if weight is not None else normed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        normed, rstd, weight = ctx.saved_tensors
        g = grad * weight if weight is not None else grad
        grad_x = (g - normed * (g * normed).mean(-1, keepdim=True)).mul_(rstd)
        grad_weight = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (grad * normed).flatten(0, -2).sum(0)
        return grad_x, grad_weight, None


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor] = None, eps: Optional[float] = None) -> torch.Tensor:
    """``F.rms_norm`` over the last dimension (eps: PyTorch's default), by :class:`_RMSNorm` for float32 tensors.

    Other dtypes (bf16 under autocast) keep PyTorch's own op, which computes in a wider type where it should.
    """
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    if x.dtype != torch.float32 or (weight is not None and weight.dtype != torch.float32):
        return F.rms_norm(x, (x.size(-1),), weight, eps)
    return _RMSNorm.apply(x, weight, eps)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameter, same default eps) computed by :func:`rms_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same init) whose float32 product goes through oneDNN on CPUs (see onednn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn.linear(x, self.weight, self.bias)


class Head(nn.Module):
    """One head of self-attention, written out as the lecture writes it.

    The fused :class:`MultiHeadAttention` creates its weights through this class,
    so they come from the random stream in the lecture's order, and the tests use
    its plain forward as the oracle for the fused one.
    """

    def __init__(self, n_embd: int, head_size: int, block_size: int) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T) affinities
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))  # no peeking at the future
        wei = F.softmax(wei, dim=-1)
        return wei @ self.value(x)  # weighted sum of the values


class MultiHeadAttention(nn.Module):
    """Several heads of self-attention in parallel, their outputs concatenated.

    The weights of all heads live in one tensor ``qkv`` of shape
    (n_head, 3, head_size, n_embd), ordered key, query, value within each head,
    so one matmul projects every head and one attention call serves them all.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_size = config.n_head, config.head_size
        heads = [Head(config.n_embd, self.head_size, config.block_size) for _ in range(self.n_head)]
        self.qkv = nn.Parameter(torch.stack([torch.stack([h.key.weight, h.query.weight, h.value.weight]) for h in heads]).detach())
        self.proj = Linear(self.n_head * self.head_size, config.n_embd) if config.proj else None
        self.dropout = nn.Dropout(config.dropout)
        self.p_attn = config.dropout
        self.rope_base = config.rope_base if config.pos == "rope" else None
        self.qk_norm = config.qk_norm
        self.scale = (config.n_embd if config.attn_scale == "n_embd" else self.head_size) ** -0.5
        self.register_buffer("future", future_mask(config.block_size), persistent=False)  # the lecture's tril
        self.captured: Optional[list[torch.Tensor]] = None  # inspection sets a list to collect the weights in

    def init_normal(self, std: float) -> None:
        """The lecture's N(0, std) init, drawn per head and per key/query/value matrix, in its order."""
        with torch.no_grad():
            for h in range(self.n_head):
                for j in range(3):
                    self.qkv[h, j].normal_(mean=0.0, std=std)

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        H, hs = self.n_head, self.head_size
        # one product projects every head; one copy then puts heads before time, so each is a plain batch
        qkv = onednn.linear(x, self.qkv.view(-1, C)).view(B, T, H * 3, hs).transpose(1, 2).contiguous()
        k, q, v = qkv.view(B, H, 3, T, hs).unbind(2)  # (B, H, T, hs) each
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        if self.rope_base is not None:
            start = cache.pos if cache is not None else 0
            positions = torch.arange(start, start + T, device=x.device)
            q, k = rotary(q, positions, self.rope_base), rotary(k, positions, self.rope_base)
        causal = True
        if cache is not None:
            causal = cache.pos == 0  # a prefill is causal; a new token sees everything cached before it
            k, v = cache.extend(layer, k, v)
        if self.captured is not None:  # only `tinyshake inspect` asks: the fast paths never form the weights
            self.captured.append(attention_weights(q, k, self.future[:T, :T] if causal else None, self.scale))
        out = attend(q, k, v, self.p_attn if self.training else 0.0, causal, self.future, self.scale)
        out = out.transpose(1, 2).reshape(B, T, H * hs)  # heads side by side
        if self.proj is not None:
            out = self.dropout(self.proj(out))
        return out


class _ReLUSquared(torch.autograd.Function):
    """relu(x)² with a backward of two passes over memory, where autograd's chain of three ops takes three.

    Autograd would save relu(x), differentiate the square (2 · relu(x) · grad)
    and then the ReLU (zero where x ≤ 0). But relu(x) is already zero there, so
    ``grad · relu(x) · 2`` is the whole gradient: the same numbers (doubling is
    exact in floating point), one pass fewer over an activation that, at the
    modern preset's size, does not fit in a CPU's cache.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        ctx.save_for_backward(r)
        return r.square()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (grad * r).mul_(2.0)


class ReLUSquared(nn.Module):
    """relu(x)²: as cheap as ReLU and, in small fast-trained models, better than GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLUSquared.apply(x)


class FeedForward(nn.Module):
    """Per-token computation after the tokens have talked: Linear + ReLU (+ projection when wide)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n = config.n_embd
        act = ReLUSquared() if config.activation == "relu2" else nn.ReLU()
        if config.ffwd == "wide":
            layers: list[nn.Module] = [Linear(n, 4 * n), act, Linear(4 * n, n), nn.Dropout(config.dropout)]
        else:
            layers = [Linear(n, n), act]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Block(nn.Module):
    """Communication (attention) followed by computation (feed-forward)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.sa = MultiHeadAttention(config)
        self.ffwd = FeedForward(config) if config.ffwd != "none" else None
        self.ln1, self.ln2 = make_norm(config), make_norm(config)
        self.residual = config.residual

    def forward(self, x: torch.Tensor, cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        a = self.sa(self.ln1(x), cache, layer)
        x = x + a if self.residual else a
        if self.ffwd is not None:
            f = self.ffwd(self.ln2(x))
            x = x + f if self.residual else f
        return x


def make_norm(config: ModelConfig) -> nn.Module:
    """The lecture's LayerNorm, RMSNorm for the modern preset, or nothing before the layernorm stage."""
    if not config.layernorm:
        return nn.Identity()
    return RMSNorm(config.n_embd) if config.norm == "rmsnorm" else nn.LayerNorm(config.n_embd)


def lm_loss(logits: torch.Tensor, targets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Mean cross-entropy of next-token predictions, as the lecture computes it."""
    if targets is None:
        return None
    B, T, C = logits.shape
    return F.cross_entropy(logits.view(B * T, C), targets.reshape(B * T))


class BigramLanguageModel(nn.Module):
    """Each token reads the logits for the next token straight off a lookup table."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        logits = self.token_embedding_table(idx)
        if cache is not None:
            cache.pos += idx.shape[1]
        return logits, lm_loss(logits, targets)


class GPTLanguageModel(nn.Module):
    """Token and position embeddings, a stack of blocks, an optional final LayerNorm, and the lm_head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.n_embd)
        learned = config.pos == "learned"
        self.position_embedding_table = nn.Embedding(config.block_size, config.n_embd) if learned else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size)
        if config.init_std is not None:
            self._init_normal(config.init_std)
        if config.zero_init_proj:
            self._zero_projections()

    def _zero_projections(self) -> None:
        """Start every block as the identity: the output projections of attention and feed-forward at zero."""
        with torch.no_grad():
            for block in self.blocks:
                for layer in (block.sa.proj, block.ffwd.net[2] if block.ffwd is not None else None):
                    if isinstance(layer, nn.Linear):
                        layer.weight.zero_()

    def _init_normal(self, std: float) -> None:
        """The lecture's GPT init: N(0, std) weights and zero biases, module by module in its order."""
        with torch.no_grad():
            for module in self.modules():  # pre-order: each attention's qkv comes before its proj
                if isinstance(module, MultiHeadAttention):
                    module.init_normal(std)
                elif isinstance(module, (nn.Linear, nn.Embedding)):
                    module.weight.normal_(mean=0.0, std=std)
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()

    def forward(
        self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None, cache: Optional[KVCache] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        T = idx.shape[1]
        x = self.token_embedding_table(idx)
        if self.position_embedding_table is not None:
            start = cache.pos if cache is not None else 0
            x = x + self.position_embedding_table(torch.arange(start, start + T, device=idx.device))
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.ln_f(x))
        return logits, lm_loss(logits, targets)



def build(config: ModelConfig) -> nn.Module:
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
    "BigramLanguageModel",
    "GPTLanguageModel",
    "KVCache",
    "build",
    "count_parameters",
    "flops_per_token",
]
