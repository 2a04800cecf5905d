"""Device check, not a test: does the gpt stage learn on CUDA as the lecture's code does?

    python tests/gpu_check.py 1000     # on a CUDA machine; SMOKE=1 runs it at toy sizes anywhere

1. The attention-dropout probe of ``tinyshake.models.kernels`` for every SDPA backend and dtype, at the gpt shapes.
2. ``N`` steps of tinyshake's gpt training (with the probe's guard), then ``N`` steps of the per-head lecture
   reference with a per-parameter AdamW and the lecture's batches, with the loss estimates of each.

Published lecture runs print about train 2.0 / val 2.09 at step 500 and train 1.60 / val 1.77 at step 1000.
It needs the corpus cached (``tinyshake fetch``) and leaves a run called ``gpu-check`` (``tinyshake runs rm``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench_reference import lecture_run
from tinyshake import corpus
from tinyshake.models import kernels
from tinyshake.training import train

SMOKE = bool(os.environ.get("SMOKE"))
BACKENDS = [None, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
            SDPBackend.MATH]


def probe_backends(device: torch.device) -> None:
    n_head, head_size, block_size = (2, 8, 16) if SMOKE else (6, 64, 256)
    for dtype in (torch.float32, torch.bfloat16):
        for backend in BACKENDS:
            name = backend.name if backend else "default"
            try:
                with sdpa_kernel([backend]) if backend else contextlib.nullcontext():
                    c = kernels.check_attention_dropout(0.2, n_head, head_size, block_size, device, dtype)
            except RuntimeError as exc:
                print(f"probe {dtype} {name}: unavailable ({str(exc).splitlines()[0][:80]})")
                continue
            print(f"probe {dtype} {name}: dropped {c.dropped:.4f}, mean {c.mean:.4f}, mask gap {c.mask_gap:.2e}, "
                  f"ok {c.ok}", flush=True)


def train_tinyshake(config: train.TrainConfig, data: corpus.Corpus) -> None:
    start = time.perf_counter()
    for event in train.train(config, data):
        if isinstance(event, train.Started):
            print("tinyshake notices:", event.notices, flush=True)
        elif isinstance(event, train.Evaluated):
            print(f"tinyshake step {event.step}: train loss {event.train:.4f}, val loss {event.val:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print("device:", torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch", torch.__version__,
          "cudnn", torch.backends.cudnn.version(), flush=True)
    probe_backends(device)
    data = corpus.load()
    sizes = dict(max_iters=steps, eval_interval=500, eval_iters=50)
    if SMOKE:
        sizes.update(n_embd=16, n_head=2, n_layer=1, block_size=16, batch_size=4, eval_iters=2, eval_interval=2)
    config = train.make_config("gpt", data.tokenizer.vocab_size, run="gpu-check", device=device.type, **sizes)
    train_tinyshake(config, data)
    lecture_run("gpt", config, data, device)


if __name__ == "__main__":
    main()
