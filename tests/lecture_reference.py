"""The lecture's models, written the straightforward way: a test oracle for tinyshake's fast ones.

Each stage is built as the lecture's code builds it (per-head modules, a Python
loop over heads, explicit masked softmax), so the tests can check that tinyshake
creates the same parameters from the same random stream and computes the same
losses. Nothing here is imported by the package.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F


class RefHead(nn.Module):
    """``by_width``: scale the scores by C**-0.5 (C the embedding width), as the video's gpt.py did."""

    def __init__(self, n_embd: int, head_size: int, block_size: int, dropout: float, by_width: bool = False) -> None:
        super().__init__()
        self.by_width = by_width
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        k, q = self.key(x), self.query(x)
        wei = q @ k.transpose(-2, -1) * (C if self.by_width else k.shape[-1]) ** -0.5
        wei = F.softmax(wei.masked_fill(self.tril[:T, :T] == 0, float("-inf")), dim=-1)
        return self.dropout(wei) @ self.value(x)


class RefMultiHead(nn.Module):
    def __init__(self, n_head: int, head_size: int, n_embd: int, block_size: int, proj: bool, dropout: float,
                 by_width: bool = False) -> None:
        super().__init__()
        self.heads = nn.ModuleList([RefHead(n_embd, head_size, block_size, dropout, by_width) for _ in range(n_head)])
        self.proj = nn.Linear(head_size * n_head, n_embd) if proj else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.dropout(self.proj(out)) if self.proj is not None else out


class RefFeedForward(nn.Module):
    def __init__(self, n_embd: int, wide: bool, dropout: float) -> None:
        super().__init__()
        if wide:
            self.net = nn.Sequential(
                nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
            )
        else:
            self.net = nn.Sequential(nn.Linear(n_embd, n_embd), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RefBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, residual: bool, layernorm: bool, dropout: float,
                 by_width: bool = False):
        super().__init__()
        self.sa = RefMultiHead(n_head, n_embd // n_head, n_embd, block_size, residual, dropout, by_width)
        self.ffwd = RefFeedForward(n_embd, residual, dropout)
        self.ln1 = nn.LayerNorm(n_embd) if layernorm else nn.Identity()
        self.ln2 = nn.LayerNorm(n_embd) if layernorm else nn.Identity()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            x = x + self.sa(self.ln1(x))
            return x + self.ffwd(self.ln2(x))
        return self.ffwd(self.sa(x))


class RefModel(nn.Module):
    """Token + position embeddings, then the stage's middle, then lm_head: the lecture's v2 ladder.

    ``gpt`` is the lecture repository's gpt.py of today (head_size**-0.5, N(0, 0.02) init); ``gpt-video`` is
    gpt.py as the video wrote it: scores scaled by C**-0.5 and PyTorch's default init.
    """

    def __init__(self, stage: str, vocab_size: int, block_size: int, n_embd: int, n_head: int, n_layer: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        if stage == "head":
            self.middle = RefHead(n_embd, n_embd, block_size, 0.0)
        elif stage in ("multihead", "ffwd"):
            layers = [RefMultiHead(n_head, n_embd // n_head, n_embd, block_size, False, 0.0)]
            if stage == "ffwd":
                layers.append(RefFeedForward(n_embd, False, 0.0))
            self.middle = nn.Sequential(*layers)
        else:
            residual = stage != "blocks"
            layernorm = stage in ("layernorm", "gpt", "gpt-video", "mini")
            by_width = stage == "gpt-video"
            blocks = [RefBlock(n_embd, n_head, block_size, residual, layernorm, dropout, by_width)
                      for _ in range(n_layer)]
            if layernorm:
                blocks.append(nn.LayerNorm(n_embd))
            self.middle = nn.Sequential(*blocks)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        if stage in ("gpt", "mini"):
            self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        x = self.token_embedding_table(idx) + self.position_embedding_table(torch.arange(T, device=idx.device))
        logits = self.lm_head(self.middle(x))
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        return logits, F.cross_entropy(logits.view(B * T, C), targets.view(B * T))


def ref_estimate_loss(model: nn.Module, train: torch.Tensor, val: torch.Tensor, batch_size: int, block_size: int,
                      eval_iters: int) -> dict[str, float]:
    """The lecture's estimate_loss: eval_iters random batches per split, one at a time."""
    out = {}
    model.eval()
    with torch.no_grad():
        for split, data in (("train", train), ("val", val)):
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                ix = torch.randint(len(data) - block_size, (batch_size,))
                x = torch.stack([data[i:i + block_size] for i in ix])
                y = torch.stack([data[i + 1:i + block_size + 1] for i in ix])
                losses[k] = model(x, y)[1].item()
            out[split] = losses.mean().item()
    model.train()
    return out
