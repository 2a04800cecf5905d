"""A run's weights file loads into the lecture's own gpt.py, written here the way the video writes it.

The classes below follow the lecture's final gpt.py line for line (its globals
become arguments of :func:`lecture_gpt`); nothing of tinyshake's model is used
to build them. The test trains a small run with the installed command, reads
its weights file with safetensors alone, and loads it with a strict
``load_state_dict``: every key and shape must be the lecture's, and the loaded
model must compute tinyshake's losses.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import safetensors.torch
import torch
import torch.nn as nn
from torch.nn import functional as F

from conftest import TINYSHAKE, on_disk, subprocess_env
from tinyshake import checkpoint, corpus
from tinyshake.store import paths
from tinyshake.training import train
from tinyshake.models.model import build


def lecture_gpt(vocab_size: int, n_embd: int, n_head: int, n_layer: int, block_size: int, dropout: float,
                scale_by_width: bool = False) -> nn.Module:
    """The lecture's GPTLanguageModel with these hyperparameters; ``scale_by_width``: the video's C**-0.5."""

    class Head(nn.Module):
        """ one head of self-attention """

        def __init__(self, head_size):
            super().__init__()
            self.key = nn.Linear(n_embd, head_size, bias=False)
            self.query = nn.Linear(n_embd, head_size, bias=False)
            self.value = nn.Linear(n_embd, head_size, bias=False)
            self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            k = self.key(x)
            q = self.query(x)
            wei = q @ k.transpose(-2, -1) * (C if scale_by_width else k.shape[-1]) ** -0.5
            wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))
            wei = F.softmax(wei, dim=-1)
            wei = self.dropout(wei)
            v = self.value(x)
            out = wei @ v
            return out

    class MultiHeadAttention(nn.Module):
        """ multiple heads of self-attention in parallel """

        def __init__(self, num_heads, head_size):
            super().__init__()
            self.heads = nn.ModuleList([Head(head_size) for _ in range(num_heads)])
            self.proj = nn.Linear(head_size * num_heads, n_embd)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            out = torch.cat([h(x) for h in self.heads], dim=-1)
            out = self.dropout(self.proj(out))
            return out

    class FeedFoward(nn.Module):
        """ a simple linear layer followed by a non-linearity """

        def __init__(self, n_embd):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(n_embd, 4 * n_embd),
                nn.ReLU(),
                nn.Linear(4 * n_embd, n_embd),
                nn.Dropout(dropout),
            )

        def forward(self, x):
            return self.net(x)

    class Block(nn.Module):
        """ Transformer block: communication followed by computation """

        def __init__(self, n_embd, n_head):
            super().__init__()
            head_size = n_embd // n_head
            self.sa = MultiHeadAttention(n_head, head_size)
            self.ffwd = FeedFoward(n_embd)
            self.ln1 = nn.LayerNorm(n_embd)
            self.ln2 = nn.LayerNorm(n_embd)

        def forward(self, x):
            x = x + self.sa(self.ln1(x))
            x = x + self.ffwd(self.ln2(x))
            return x

    class GPTLanguageModel(nn.Module):

        def __init__(self):
            super().__init__()
            self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
            self.position_embedding_table = nn.Embedding(block_size, n_embd)
            self.blocks = nn.Sequential(*[Block(n_embd, n_head=n_head) for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size)

        def forward(self, idx, targets=None):
            B, T = idx.shape
            tok_emb = self.token_embedding_table(idx)
            pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))
            x = tok_emb + pos_emb
            x = self.blocks(x)
            x = self.ln_f(x)
            logits = self.lm_head(x)
            if targets is None:
                loss = None
            else:
                B, T, C = logits.shape
                logits = logits.view(B * T, C)
                targets = targets.view(B * T)
                loss = F.cross_entropy(logits, targets)
            return logits, loss

    return GPTLanguageModel()


def trained_run(home, name: str, stage: str, *flags: str) -> dict:
    """Train ``stage`` for a few steps with the installed command; returns the run's record."""
    args = [TINYSHAKE, "train", "--model", stage, "--run", name, "--max-iters", "12", "--eval-interval", "6",
            "--eval-iters", "4", "--sample-chars", "0", "--device", "cpu", *flags]
    done = subprocess.run(args, env=subprocess_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((paths.runs_root() / name / checkpoint.CONFIG).read_text())


@pytest.mark.parametrize("stage, flags", [
    ("mini", ()),
    ("gpt-video", ("--n-embd", "48", "--n-head", "3", "--n-layer", "2", "--block-size", "16", "--batch-size", "4")),
    ("gpt", ("--n-embd", "48", "--n-head", "3", "--n-layer", "2", "--block-size", "16", "--batch-size", "4")),
])
def test_the_lectures_gpt_py_loads_a_runs_weights_and_computes_its_losses(home, cached, stage, flags) -> None:
    record = trained_run(home, "lecture", stage, *flags)
    m = record["model"]
    weights = safetensors.torch.load_file(paths.runs_root() / "lecture" / record["files"]["weights"])
    lecture = lecture_gpt(m["vocab_size"], m["n_embd"], m["n_head"], m["n_layer"], m["block_size"], m["dropout"],
                          scale_by_width=stage == "gpt-video")
    assert sorted(weights) == sorted(lecture.state_dict())  # the same keys (safetensors stores them sorted)
    lecture.load_state_dict(weights)  # strict: no key missing, none unexpected, every shape the lecture's
    loaded = checkpoint.load("lecture", weights="last").model
    data = corpus.load().val
    torch.manual_seed(0)
    x, y = (t.contiguous() for t in train.get_batch(data, 8, m["block_size"]))  # torch.stack, as the lecture
    lecture.eval(), loaded.eval()
    with torch.no_grad():
        theirs, ours = lecture(x, y)[1].item(), loaded(x, y)[1].item()
    assert theirs == pytest.approx(ours, abs=1e-5)
    assert 1.0 < theirs < 4.6  # a real loss of a real model, after a few steps of training


def test_a_run_saved_under_the_old_fused_names_still_opens_and_its_file_is_left_as_it_is(home, cached) -> None:
    """Runs of tinyshake 0.x saved each layer's heads as one ``sa.qkv`` tensor, without the tril masks."""
    record = trained_run(home, "old", "mini")
    folder = paths.runs_root() / "old"
    new = safetensors.torch.load_file(folder / record["files"]["weights"])
    old = {}
    for key, value in new.items():
        if ".sa.heads." not in key:
            old[key] = value
        elif key.endswith(".tril"):
            continue
        elif ".heads.0.key." in key:  # one fused tensor per layer, written where the first head's weights were
            layer = key.split(".sa.heads.")[0]
            heads = range(record["model"]["n_head"])
            old[f"{layer}.sa.qkv"] = torch.stack([torch.stack([new[f"{layer}.sa.heads.{h}.{kind}.weight"]
                                                               for kind in ("key", "query", "value")]) for h in heads])

    class OldModel:
        """What a 0.x model's state dict looked like: checkpoint.save writes it as it is."""

        def state_dict(self) -> dict[str, torch.Tensor]:
            return old

    checkpoint.save("old", OldModel(), dict(record), checkpoint.load_state(checkpoint.read_record("old")))  # type: ignore[arg-type]
    path = folder / on_disk("old")["files"]["weights"]
    before = path.read_bytes()
    assert "blocks.0.sa.qkv" in safetensors.torch.load(before)
    loaded = checkpoint.load("old", weights="last").model
    assert path.read_bytes() == before
    expected = build(checkpoint.model_config(checkpoint.read_record("old")))
    expected.load_state_dict(new)
    ids = torch.randint(65, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded.eval(), expected.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], expected(ids)[0], atol=1e-5, rtol=0)
