"""Benchmark, not a test: nanoGPT's README CPU recipe, rebuilt from its published settings, for a side-by-side run.

    python tests/bench_nanogpt_recipe.py            # 2000 iterations, then the loss on the whole val split

nanoGPT's own code is not available offline here, so this is a fresh
implementation of what its README's CPU command configures:
``config/train_shakespeare_char.py`` with ``--block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0 --compile=False``. That is a GPT-2 style model (GELU, LayerNorms
without bias, no biases in linears, lm_head tied to the token embedding,
residual projections initialised with std 0.02/sqrt(2 * n_layer)), AdamW with
betas (0.9, 0.99) and weight decay 0.1 on matrices only, 100 warmup iterations,
cosine decay from 1e-3 to 1e-4, and gradient clipping at 1.0. It runs in plain
PyTorch, as nanoGPT would: no tinyshake fast paths.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

from tinyshake import corpus, evaluate
from tinyshake.training import train

BLOCK, BATCH, LAYERS, HEADS, WIDTH = 64, 12, 4, 4, 128
ITERS, WARMUP, LR, MIN_LR = 2000, 100, 1e-3, 1e-4


class RecipeBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(WIDTH, bias=False), nn.LayerNorm(WIDTH, bias=False)
        self.c_attn, self.attn_proj = nn.Linear(WIDTH, 3 * WIDTH, bias=False), nn.Linear(WIDTH, WIDTH, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(WIDTH, 4 * WIDTH, bias=False), nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2) for t in self.c_attn(self.ln_1(x)).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class RecipeGPT(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, WIDTH), nn.Embedding(BLOCK, WIDTH)
        self.blocks = nn.ModuleList(RecipeBlock() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.lm_head = nn.Linear(WIDTH, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1))
        return logits, loss


def learning_rate(it: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (ITERS - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


def main() -> None:
    data = corpus.load()
    torch.manual_seed(1337)
    model = RecipeGPT(data.tokenizer.vocab_size)
    params = [p for p in model.parameters()]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.99))
    spent = 0.0
    for it in range(ITERS):
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = learning_rate(it)
        xb, yb = train.get_batch(data.train, BATCH, BLOCK)
        _, loss = model(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        spent += time.perf_counter() - start
        if it % 250 == 0 or it == ITERS - 1:
            print(f"iter {it}: loss {loss.item():.4f} ({spent:.1f} s of training)", flush=True)
    estimate = train.estimate_loss(model, {"train": data.train, "val": data.val}, BATCH, BLOCK, eval_iters=20)
    full = evaluate.split_loss(model, data.val, BLOCK, data.tokenizer)
    print(f"nanoGPT recipe: {ITERS} iterations in {spent:.1f} s of training "
          f"({ITERS * BATCH * BLOCK / spent:,.0f} tokens/s); 20-batch estimate val {estimate['val']:.4f}; "
          f"whole val split {full.loss:.4f}")


if __name__ == "__main__":
    main()
