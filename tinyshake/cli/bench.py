"""``tinyshake bench``: how fast each stage trains, evaluates and samples here (a benchmark, not a test)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from tinyshake import stages
from tinyshake.cli._output import handle_errors, make_console

SLOW_ON_CPU = {"gpt"}
COLUMNS = (
    ("stage", "stage", "{}"), ("params", "parameters", "{:,}"), ("tok/s", "tokens_per_s", "{:,.0f}"),
    ("ms/iter", "ms_per_iter", "{:.2f}"), ("GFLOP/s", "gflops", "{:.1f}"), ("% peak", "peak_percent", "{:.1f}"),
    ("eval s", "eval_s", "{:.2f}"), ("sample c/s (cache)", "sample_chars_per_s_cache", "{:,.0f}"),
    ("sample c/s (full)", "sample_chars_per_s_full", "{:,.0f}"), ("peak MiB", "peak_memory_mib", "{:,.0f}"),
)


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
    dtype: Annotated[str, typer.Option(help="float32 or bfloat16 autocast.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Measure training tokens/s, GFLOP/s against this machine's matmul peak, eval time, sampling speed and memory."""
    import torch

    from tinyshake import bench, corpus, train as core
    from tinyshake.cli.fetch import ensure_corpus
    from tinyshake.device import resolve

    device = resolve(device_name).device
    names = stage or [s for s in stages.STAGES if not (device.type == "cpu" and s in SLOW_ON_CPU)]
    for name in names:
        stages.get(name)
    console = make_console()
    ensure_corpus(corpus.DEFAULT_CORPUS, console)
    data = corpus.load()
    peak = bench.matmul_peak(device, torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    results = []
    for name in names:
        config = core.make_config(name, data.tokenizer.vocab_size, batch_size=batch_size, block_size=block_size,
                                  n_embd=n_embd, n_layer=n_layer, eval_iters=eval_iters, device=device_name,
                                  dtype=dtype)
        results.append(bench.measure(config, data.train, data.val, steps=steps, peak_gflops=peak))
    if as_json:
        print(json.dumps({"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "matmul_peak_gflops": peak, "stages": [r.to_dict() for r in results]}, indent=2))
        return
    table = Table(title=f"tinyshake bench on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads; "
                        f"{dtype} matmul peak {peak:.0f} GFLOP/s)", title_justify="left")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")
    for result in results:
        row = result.to_dict()
        table.add_row(*(fmt.format(row[key]) for _, key, fmt in COLUMNS))
    console.print(table)
