"""Benchmark, not a test: tinyshake's training step against the straightforward per-head lecture code.

    python tests/bench_reference.py mini layernorm residual      # per-step speed, interleaved best-of
    python tests/bench_reference.py --whole mini                  # a whole lecture-style run, timed end to end

Both sides run on tinyshake's thread choice (``--threads N`` to set it), and
tinyshake's side takes the CPU routes measured for it, as ``train`` does.
The reference is ``lecture_reference.RefModel`` with a per-parameter AdamW and the
lecture's ``torch.stack`` batches. Both sides alternate in short rounds and each
keeps its best round, so a busy or noisy machine slows both alike.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from lecture_reference import RefModel, ref_estimate_loss
from tinyshake import corpus
from tinyshake.models import optim, speed
from tinyshake.training import machine, stages, threads, train, tuning

Step = Callable[[], None]
Batch = Callable[[torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor]]


def lecture_batch(data: torch.Tensor, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ix = torch.randint(len(data) - block_size, (batch_size,))
    return (torch.stack([data[i:i + block_size] for i in ix]),
            torch.stack([data[i + 1:i + block_size + 1] for i in ix]))


def reference_model(stage: str, config: train.TrainConfig) -> RefModel:
    m = config.model
    return RefModel(stage, m.vocab_size, m.block_size, m.n_embd, m.n_head, m.n_layer, m.dropout)


def training_step(net: torch.nn.Module, opt: Any, batch: Batch, data: torch.Tensor,
                  config: train.TrainConfig) -> Step:
    """The lecture's step (batch, forward, zero_grad, backward, AdamW) as a closure over one model."""
    def run() -> None:
        xb, yb = batch(data, config.batch_size, config.block_size)
        _, loss = net(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def steps(stage: str, data: torch.Tensor) -> dict[str, Step]:
    """One training step of each side, each over its own model and optimizer."""
    config = train.make_config(stage, 65)
    torch.manual_seed(1337)
    ref = reference_model(stage, config)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=config.learning_rate)
    torch.manual_seed(1337)
    ours = speed.build(config.model)
    our_opt = optim.make(ours, "adamw", config.learning_rate, config.muon_lr)
    return {"reference": training_step(ref, ref_opt, lecture_batch, data, config),
            "tinyshake": training_step(ours, our_opt, train.get_batch, data, config)}


def best_step_seconds(runs: dict[str, Step], rounds: int = 12, per_round: int = 50, warmup: int = 10) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(warmup):
                run()
            start = time.perf_counter()
            for _ in range(per_round):
                run()
            best[name] = min(best[name], (time.perf_counter() - start) / per_round)
    return best


def lecture_run(stage: str, config: train.TrainConfig, data: corpus.Corpus,
                device: torch.device = torch.device("cpu")) -> None:
    """The lecture's loop: per-head model, per-parameter AdamW, per-batch estimates, printed as it goes."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    net = reference_model(stage, config).to(device)
    train_data, val_data = data.train.to(device), data.val.to(device)
    step = training_step(net, torch.optim.AdamW(net.parameters(), lr=config.learning_rate), lecture_batch,
                         train_data, config)
    for it in range(config.max_iters):
        if it in config.eval_steps():
            losses = ref_estimate_loss(net, train_data, val_data, config.batch_size, config.block_size,
                                       config.eval_iters)
            print(f"reference step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        step()
    print(f"lecture-style {stage} run: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", choices=[s for s in stages.STAGES if s not in ("bigram", "modern")])
    parser.add_argument("--whole", action="store_true", help="time a whole lecture-style run instead")
    parser.add_argument("--threads", type=int, help="CPU threads for both sides (default: tinyshake's choice)")
    args = parser.parse_args()
    choice = threads.decide(args.threads)  # one count for both sides: train's, from the free cores
    threads.configure(choice)
    routes = tuning.tune(choice.threads)
    print(f"{machine.cpu_model()}, torch {torch.__version__}, {choice.describe()}; {routes.describe_linear()}; "
          f"{routes.describe_attention()}", flush=True)
    data = corpus.load()
    for stage in args.stages:
        if args.whole:
            lecture_run(stage, train.make_config(stage, data.tokenizer.vocab_size), data)
            continue
        best = best_step_seconds(steps(stage, data.train))
        config = train.make_config(stage, 65)
        per_step = config.batch_size * config.block_size
        ref, ours = best["reference"], best["tinyshake"]
        print(f"{stage}: reference {ref * 1e3:.2f} ms/iter ({per_step / ref:,.0f} tokens/s), "
              f"tinyshake {ours * 1e3:.2f} ms/iter ({per_step / ours:,.0f} tokens/s): {ref / ours:.2f}x", flush=True)


if __name__ == "__main__":
    main()
