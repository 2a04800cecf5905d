"""Benchmark figures for a stage: training speed, achieved FLOP/s against a measured peak, evaluation time,
sampling speed with and without the KV cache, and peak memory.

This is a benchmark, not a test: it returns numbers for ``tinyshake bench`` to print. Each stage runs on
fresh random weights (training speed does not depend on what the model has learned).
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from tinyshake import sampling
from tinyshake.models import onednn, optim, speed
from tinyshake.models.model import flops_per_token
from tinyshake.training.train import TrainConfig, autocast, estimate_loss, for_config, get_batch


@dataclass(frozen=True)
class StageFigures:
    stage: str
    parameters: int
    tokens_per_s: float
    ms_per_iter: float
    plain_ms_per_iter: float  # the lecture's modules and optimizer as written (train --plain)
    gflops: float
    peak_percent: float
    eval_s: float
    sample_chars_per_s_cache: float
    sample_chars_per_s_full: float
    peak_memory_mib: float

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n product on this device, by the route the models' layers take (oneDNN on CPUs):
    the ceiling the training figures are compared with."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    onednn.linear(a, b)  # warm up
    seconds = min(_timed(lambda: onednn.linear(a, b), device) for _ in range(repeats))
    return 2 * n**3 / seconds / 1e9


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory on CUDA; on the CPU the process's peak resident size (it only grows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def sampling_speed(model: torch.nn.Module, chars: int, use_cache: bool) -> float:
    """Characters per second while sampling ``chars`` characters from token 0."""
    settings = sampling.SamplingSettings(max_new_tokens=chars, use_cache=use_cache)
    start = time.perf_counter()
    for _ in sampling.generate(model, [0], settings):
        pass
    return chars / (time.perf_counter() - start)


def _trainer(config: TrainConfig, plain: bool, device: torch.device, dtype: str,
             train_data: torch.Tensor) -> tuple[torch.nn.Module, Callable[[], None]]:
    """A fresh model and one training step of it, as ``train`` (or ``train --plain``) takes it."""
    torch.manual_seed(config.seed)
    model = speed.build(config.model, plain).to(device)
    optimizer = optim.make(model, config.optimizer, config.learning_rate, config.muon_lr, plain)

    def step() -> None:
        xb, yb = get_batch(train_data, config.batch_size, config.block_size)
        with autocast(device, dtype):
            _, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, step


def _seconds_per_step(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    return _timed(lambda: [step() for _ in range(steps)], device) / steps


def measure(config: TrainConfig, train_data: torch.Tensor, val_data: torch.Tensor, steps: int = 30,
            warmup: int = 5, peak_gflops: Optional[float] = None) -> StageFigures:
    """Time ``steps`` training steps (after ``warmup``) with and without the speed layer, one evaluation, and
    sampling over one block.

    The device and the dtype (``auto`` included) are resolved as training resolves them.
    """
    plan = for_config(config)
    device, dtype = plan.device.device, plan.dtype
    train_data, val_data = train_data.to(device), val_data.to(device)
    plain_seconds = _seconds_per_step(_trainer(config, True, device, dtype, train_data)[1], steps, warmup, device)
    model, step = _trainer(config, False, device, dtype, train_data)
    seconds = _seconds_per_step(step, steps, warmup, device)
    tokens = config.batch_size * config.block_size / seconds
    gflops = flops_per_token(config.model) * tokens / 1e9
    peak = peak_gflops or matmul_peak(device)
    splits = {"train": train_data, "val": val_data}
    eval_s = _timed(lambda: estimate_loss(model, splits, config.batch_size, config.block_size, config.eval_iters,
                                          dtype), device)
    chars = config.block_size
    return StageFigures(
        stage=config.stage,
        parameters=sum(p.numel() for p in model.parameters()),
        tokens_per_s=tokens,
        ms_per_iter=seconds * 1000,
        plain_ms_per_iter=plain_seconds * 1000,
        gflops=gflops,
        peak_percent=100 * gflops / peak,
        eval_s=eval_s,
        sample_chars_per_s_cache=sampling_speed(model, chars, use_cache=True),
        sample_chars_per_s_full=sampling_speed(model, chars, use_cache=False),
        peak_memory_mib=peak_memory_mib(device),
    )
