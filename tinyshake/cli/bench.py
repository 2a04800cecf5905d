"""``tinyshake bench``: how fast each stage trains, evaluates and samples here (a benchmark, not a test).

It trains as ``train`` does: the threads from the free cores (or ``--threads``)
and the CPU routes measured for them (``--retune`` measures again), and it says
what it measures as it goes, since a whole bench takes a minute.
"""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import Annotated, Optional

import typer
from rich.console import Console

from tinyshake.training import stages
from tinyshake.cli._fit import Col, fitted_table
from tinyshake.cli._output import handle_errors, make_console

SLOW_ON_CPU = {"gpt"}
COLUMNS = (
    ("stage", "stage", "{}"), ("params", "parameters", "{:,}"), ("tok/s", "tokens_per_s", "{:,.0f}"),
    ("ms/iter", "ms_per_iter", "{:.2f}"), ("plain ms/iter", "plain_ms_per_iter", "{:.2f}"), ("GFLOP/s", "gflops", "{:.1f}"), ("% peak", "peak_percent", "{:.1f}"),
    ("eval s", "eval_s", "{:.2f}"), ("sample c/s (cache)", "sample_chars_per_s_cache", "{:,.0f}"),
    ("sample c/s (full)", "sample_chars_per_s_full", "{:,.0f}"), ("peak MiB", "peak_memory_mib", "{:,.0f}"),
)
# what a narrow terminal leaves out, the highest first (--json and a pipe keep every column)
SPARE = {"sample c/s (full)": 6, "GFLOP/s": 5, "peak MiB": 4, "plain ms/iter": 3, "params": 2, "% peak": 1}


@handle_errors
def bench_cmd(
    stage: Annotated[Optional[list[str]], typer.Option("--stage", "-s", help="Stage to measure (repeatable; default: all but gpt on a CPU).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Override the batch size.")] = None,
    block_size: Annotated[Optional[int], typer.Option(help="Override the context length.")] = None,
    n_embd: Annotated[Optional[int], typer.Option(help="Override the width.")] = None,
    n_layer: Annotated[Optional[int], typer.Option(help="Override the depth.")] = None,
    steps: Annotated[int, typer.Option(help="Timed training steps per stage.", min=1)] = 30,
    eval_iters: Annotated[int, typer.Option(help="Batches per split in the timed evaluation.", min=1)] = 200,
    device_name: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[Optional[str], typer.Option(
        help="float32, bfloat16 autocast, or auto (default: each stage's own, as train uses it).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: as many as there are free cores).")] = None,
    retune: Annotated[bool, typer.Option(
        "--retune", help="Measure this machine's CPU routes again (oneDNN or BLAS, attention) and cache them.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure training tokens/s, GFLOP/s against this machine's matmul peak, eval time, sampling speed and memory.

    "ms/iter" is a step with the speed layer, "plain ms/iter" one of the lecture's code as written (train --plain).
    """
    import torch

    from tinyshake import bench, corpus
    from tinyshake.training import estimates, threads as cpu_threads, train as core, tuning
    from tinyshake.cli._corpus import ensure_corpus
    from tinyshake.training.device import resolve
    from tinyshake.training.plan import resolve_dtype

    device = resolve(device_name).device
    names = stage or [s for s in stages.STAGES if not (device.type == "cpu" and s in SLOW_ON_CPU)]
    for name in names:
        stages.get(name)
    choice = cpu_threads.decide(threads)
    console = make_console()
    progress = make_console(stderr=True)
    ensure_corpus(corpus.DEFAULT_CORPUS, progress)
    data = corpus.load()
    configs = [core.make_config(name, data.tokenizer.vocab_size, batch_size=batch_size, block_size=block_size,
                                n_embd=n_embd, n_layer=n_layer, eval_iters=eval_iters, device=device_name,
                                dtype=dtype) for name in names]
    for config in configs:
        estimates.check_fits(config, data, device)  # before a second is spent measuring
    if choice.busy:
        print(f"note: {choice.notice()}", file=sys.stderr)
    cpu_threads.configure(choice)
    with _status(progress, "measuring this CPU's routes" if retune else "looking up this CPU's routes"):
        routes = tuning.tune(choice.threads, retune) if device.type == "cpu" or retune else None
    peak_dtype = resolve_dtype(device, dtype or "float32", [])
    with _status(progress, "measuring the matmul peak"):
        peak = bench.matmul_peak(device, torch.bfloat16 if peak_dtype == "bfloat16" else torch.float32)
    results = []
    for index, config in enumerate(configs, 1):
        with _status(progress, f"measuring {config.stage} ({index}/{len(configs)}): {steps} steps, an evaluation, "
                               "sampling"):
            results.append(bench.measure(config, data.train, data.val, steps=steps, peak_gflops=peak))
        _done(progress, f"{config.stage}: {results[-1].ms_per_iter:.2f} ms/iter ({index}/{len(configs)})")
    if as_json:
        print(json.dumps({"device": str(device), "torch": torch.__version__, "threads": choice.threads,
                          "threads_reason": choice.reason, "routes": asdict(routes) if routes else None,
                          "matmul_peak_gflops": peak, "stages": [r.to_dict() for r in results]}, indent=2))
        return
    cols = [Col(header, "left" if key == "stage" else "right", spare=SPARE.get(header, 0)) for header, key, _ in COLUMNS]
    rows = [[fmt.format(row[key]) for _, key, fmt in COLUMNS] for row in (result.to_dict() for result in results)]
    console.print(fitted_table(console, cols, rows, title_justify="left",
                               title=f"tinyshake bench on {device} (torch {torch.__version__}, {choice.describe()}; "
                                     f"{peak_dtype} matmul peak {peak:.0f} GFLOP/s)"))
    if routes is not None:
        console.print(f"{routes.describe_linear()}\n{routes.describe_attention()}", markup=False)


def _status(progress: Console, text: str) -> AbstractContextManager:
    """What bench is doing now: a spinner on a terminal, else one line on stderr (stdout stays the results)."""
    if progress.is_terminal:
        return progress.status(text)
    print(f"bench: {text}...", file=sys.stderr, flush=True)
    return nullcontext()


def _done(progress: Console, text: str) -> None:
    if progress.is_terminal:
        progress.print(text, markup=False)
    else:
        print(f"bench: {text}", file=sys.stderr, flush=True)
