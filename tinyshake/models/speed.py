"""The speed layer: faster modules that compute what the lecture's compute, swapped in after a model is built.

:func:`apply` walks a model from :mod:`tinyshake.models.model` and replaces, in place:

- each :class:`~tinyshake.models.model.MultiHeadAttention` by :class:`FusedMultiHeadAttention`:
  every head's key, query and value in one weight, so one product projects all
  heads, one attention call serves them all (the lecture's three steps as
  batched matmuls for short contexts on a CPU, PyTorch's fused kernel
  otherwise), and a KV cache makes each sampled character cost one position;
- each ``nn.Linear`` by :class:`OneDNNLinear`, whose float32 products take oneDNN
  where :mod:`tinyshake.training.tuning` measured it faster;
- the modern preset's RMSNorm, QK-norm and ReLU² by versions with a closed-form
  backward (fewer passes over memory than autograd's chain).

Nothing is drawn from the random stream, and the parameters keep their values
and their order, so a sped-up model trains from the lecture's weights with the
lecture's batches. Its ``state_dict`` still speaks the lecture's names
(``blocks.0.sa.heads.0.key.weight``, the ``tril`` buffers): checkpoints written
from either model load into both, and into the lecture's own gpt.py. The tests
hold every swapped module against the lecture's (tests/test_speed.py).

The flat fused AdamW, the other half of a fast step, is in :mod:`tinyshake.models.optim`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake.models import modern, onednn
from tinyshake.models.model import GPTLanguageModel, LanguageModel, ModelConfig, MultiHeadAttention
from tinyshake.models.model import build as build_lecture

SMALL_ATTENTION = 128  # positions up to which, on a CPU, plain batched matmuls beat the fused kernel (tuning.apply sets it from a measurement)
KINDS = ("key", "query", "value")  # the order of each head's matrices in the fused weight, as the lecture draws them


# --------------------------------------------------------------------------- attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float, causal: bool,
           future: Optional[torch.Tensor] = None, scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked to the past) @ v, for every head at once; scale defaults to head_size^-0.5.

    On a GPU, and for long contexts on a CPU, one ``scaled_dot_product_attention``
    call. For short contexts on a CPU its fixed costs dominate: there the
    lecture's own three steps, batched over the heads, run faster (up to
    :data:`SMALL_ATTENTION` positions, measured on the machine by :mod:`tinyshake.training.tuning`).
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


def future_mask(size: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """0 where a query may look, -inf where it would peek at the future: the lecture's tril, added before softmax."""
    return torch.full((size, size), float("-inf"), device=device).triu(1)


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


class FusedMultiHeadAttention(nn.Module):
    """The lecture's MultiHeadAttention with its heads side by side in one weight ``qkv`` (n_head, 3, hs, n_embd).

    Made from a lecture module (:meth:`__init__` copies its heads' weights, key,
    query, value per head); its state dict splits ``qkv`` back into the
    lecture's per-head names, so checkpoints do not know which module wrote them.
    ``cache`` and ``layer`` are set while :func:`forward_cached` runs; ``captured``
    is a list while ``tinyshake inspect`` collects the attention weights.
    """

    def __init__(self, lecture: MultiHeadAttention) -> None:
        super().__init__()
        first = lecture.heads[0]
        self.n_head, self.head_size = len(lecture.heads), first.key.out_features
        self.qkv = nn.Parameter(torch.stack([torch.stack([getattr(head, kind).weight for kind in KINDS])
                                             for head in lecture.heads]).detach().clone())
        self.proj, self.dropout = lecture.proj, lecture.dropout
        self.rotate = FastQueryKeyTransform(first.rotate.qk_norm, first.rotate.rope_base, len(first.tril),
                                            self.head_size, first.tril.device)
        self.p_attn, self.scale = first.dropout.p, first.scale
        self.register_buffer("future", future_mask(len(first.tril), first.tril.device), persistent=False)
        self.cache: Optional[KVCache] = None
        self.layer = 0
        self.captured: Optional[list[torch.Tensor]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H, hs = self.n_head, self.head_size
        # one product projects every head; one copy then puts heads before time, so each is a plain batch
        qkv = onednn.linear(x, self.qkv.view(-1, C)).view(B, T, H * 3, hs).transpose(1, 2).contiguous()
        heads = qkv.view(B, H, 3, T, hs)
        cache = self.cache
        if self.rotate.active:  # the modern head's transforms, on keys and queries side by side
            kq, v = heads.split((2, 1), dim=2)
            k, q = self.rotate.pair(kq, cache.pos if cache is not None else 0).unbind(2)  # (B, H, T, hs)
            v = v.squeeze(2)
        else:  # one unbind: its backward is one stack, where slices would each add a zeroed copy
            k, q, v = heads.unbind(2)  # (B, H, T, hs) each
        causal = True
        if cache is not None:
            causal = cache.pos == 0  # a prefill is causal; a new token sees everything cached before it
            k, v = cache.extend(self.layer, k, v)
        if self.captured is not None:  # only `tinyshake inspect` asks: the fast paths never form the weights
            self.captured.append(attention_weights(q, k, self.future[:T, :T] if causal else None, self.scale))
        out = attend(q, k, v, self.p_attn if self.training else 0.0, causal, self.future, self.scale)
        out = out.transpose(1, 2).reshape(B, T, H * hs)  # heads side by side, as torch.cat of the lecture's
        return self.dropout(self.proj(out))

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        """The lecture's entries: each head's key, query and value weights, and its ``tril`` mask."""
        for h in range(self.n_head):  # in the lecture's order: a module's own buffer, then its layers
            destination[f"{prefix}heads.{h}.tril"] = torch.tril(torch.ones_like(self.future))
            for j, kind in enumerate(KINDS):  # copies, unless asked for the live tensors: saving files refuses views
                weight = self.qkv[h, j]
                destination[f"{prefix}heads.{h}.{kind}.weight"] = weight if keep_vars else weight.detach().clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        """Read the lecture's per-head entries into ``qkv``; a ``tril`` is the mask this module keeps anyway."""
        mine = {f"heads.{h}.{kind}.weight": (h, j) for h in range(self.n_head) for j, kind in enumerate(KINDS)}
        with torch.no_grad():
            for name, (h, j) in mine.items():
                key = prefix + name
                if key not in state_dict:
                    missing_keys.append(key)
                elif state_dict[key].shape != self.qkv[h, j].shape:
                    error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                      f"{tuple(state_dict[key].shape)}, the model has {tuple(self.qkv[h, j].shape)}")
                else:
                    self.qkv[h, j].copy_(state_dict[key])
        trils = {f"heads.{h}.tril" for h in range(self.n_head)}
        for key in state_dict:
            rest = key[len(prefix):] if key.startswith(prefix) else None
            if rest is not None and rest not in mine and rest not in trils and rest.split(".")[0] not in self._modules:
                unexpected_keys.append(key)


# --------------------------------------------------------------------------- the other swaps


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters) whose float32 product goes through oneDNN where that is faster (see onednn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn.linear(x, self.weight, self.bias)


class _RMSNorm(torch.autograd.Function):
    """x / rms(x) · weight over the last dimension, in about half the passes over memory of autograd's chain.

    ``F.rms_norm`` runs on a CPU as six separate ops (square, mean, add, rsqrt,
    two products), each read and written back, and autograd retraces every one
    of them. Here the forward is one norm and two products, and the backward is
    the closed form ``rstd · (g - x̂ · mean(g · x̂))`` with ``g = grad · weight``.
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


class FastRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` (same parameter, same default eps) computed by :func:`rms_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class FastQueryKeyTransform(modern.QueryKeyTransform):
    """The modern head's QK-norm by :func:`rms_norm`, and both transforms on keys and queries stacked.

    The lecture's order calls QK-norm and the rotation once for q and once for
    k, and works out the rotation's cos and sin tables each time: at the modern
    preset's size those small ops took about a tenth of a step on a CPU, most of
    it not arithmetic. :meth:`pair` does each once on k and q side by side, and
    the tables for the block's positions are worked out once, when the model is
    made (buffers, not state: checkpoints do not see them).
    """

    def __init__(self, qk_norm: bool, rope_base: Optional[float], positions: int, head_size: int,
                 device: torch.device) -> None:
        super().__init__(qk_norm, rope_base)
        if rope_base is not None:
            cos, sin = modern.rotary_tables(torch.arange(positions, device=device), head_size // 2, rope_base)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

    @property
    def active(self) -> bool:
        """Whether it changes keys and queries at all (in no lecture stage)."""
        return self.qk_norm or self.rope_base is not None

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x)

    def pair(self, kq: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Keys and queries stacked as (..., 2, T, hs) for positions ``start`` on, transformed as :meth:`forward`
        transforms each."""
        if self.qk_norm:
            kq = self.normalize(kq)
        if self.rope_base is None:
            return kq
        end = start + kq.size(-2)
        if end <= self.cos.size(0):
            cos, sin = self.cos[start:end], self.sin[start:end]
        else:  # a sampling cache that slid past the block: these positions' angles, worked out as the lecture does
            positions = torch.arange(start, end, device=kq.device)
            cos, sin = modern.rotary_tables(positions, kq.size(-1) // 2, self.rope_base)
        return modern.rotate(kq, cos.to(kq.dtype), sin.to(kq.dtype))


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


class FastReLUSquared(modern.ReLUSquared):
    """relu(x)² by :class:`_ReLUSquared`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLUSquared.apply(x)


# Modules whose faster version has the same state and differs only in its forward: their class is swapped.
SAME_STATE = {nn.Linear: OneDNNLinear, nn.RMSNorm: FastRMSNorm, modern.ReLUSquared: FastReLUSquared}


# --------------------------------------------------------------------------- applying the layer


def apply(model: LanguageModel) -> LanguageModel:
    """Swap the lecture's modules in ``model`` for the faster ones, in place; returns the model.

    Attention modules are replaced (their weights copied into one tensor, in
    the parameter order the lecture's modules had); the rest change class only.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MultiHeadAttention):
                setattr(parent, name, FusedMultiHeadAttention(child))  # keeps its place among the parent's modules
    for module in model.modules():
        faster = SAME_STATE.get(type(module))
        if faster is not None:
            module.__class__ = faster
    for layer, block in enumerate(getattr(model, "blocks", [])):
        block.sa.layer = layer
    return model


def build(config: ModelConfig, plain: bool = False) -> LanguageModel:
    """The lecture's model for ``config``, drawn from the current random stream, sped up unless ``plain``."""
    model = build_lecture(config)
    return model if plain else apply(model)


def is_applied(model: nn.Module) -> bool:
    """Whether ``model`` runs the speed layer: a bigram has nothing to swap, so it counts as sped up."""
    return not any(isinstance(module, MultiHeadAttention) for module in model.modules())


@contextlib.contextmanager
def _caching(model: GPTLanguageModel, cache: KVCache) -> Iterator[None]:
    """Hand ``cache`` to every attention layer for one forward pass."""
    attentions = [block.sa for block in model.blocks]
    for attention in attentions:
        attention.cache = cache
    try:
        yield
    finally:
        for attention in attentions:
            attention.cache = None


def forward_cached(model: LanguageModel, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The logits (B, T, vocab) of ``idx`` (B, T) at the positions after the ``cache.pos`` that ``cache`` holds.

    The lecture's forward always starts at position 0 and recomputes the whole
    context; here each attention layer adds this call's keys and values to the
    cache and attends over everything in it, so a new character costs one
    position. The model must be sped up (:func:`apply`).
    """
    T = idx.shape[1]
    if isinstance(model, GPTLanguageModel):
        x = model.token_embedding_table(idx)  # (B, T, C)
        if model.position_embedding_table is not None:
            x = x + model.position_embedding_table(torch.arange(cache.pos, cache.pos + T, device=idx.device))
        with _caching(model, cache):
            x = model.blocks(x)
        logits = model.lm_head(model.ln_f(x))
    else:  # a bigram reads each position's logits off its table: nothing to cache
        logits = model(idx)[0]
    cache.pos += T
    return logits


__all__ = ["FusedMultiHeadAttention", "KVCache", "OneDNNLinear", "FastRMSNorm", "FastReLUSquared", "apply",
           "attend", "build", "attention_weights", "batched_attention", "forward_cached", "future_mask", "is_applied",
           "rms_norm"]
