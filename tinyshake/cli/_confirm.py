"""Warn before a slow run and, on a terminal, ask: ``train`` and ``ladder`` start gpt-sized stages alike."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from tinyshake.training import estimates

if TYPE_CHECKING:
    from tinyshake.training.plan import Plan


def confirm_slow_run(plan: Plan, yes: bool) -> None:
    """Warn (on stderr) before the gpt stage on a CPU, with an estimate; ask on a terminal if it is long.

    On a CPU the gpt stage's evaluations can cost more than its training
    steps, so the warning says how much and how to cut it. Declining says so in one line and exits 1.
    """
    slow = estimates.slow_run(plan)
    if slow is None:
        return
    print(f"Warning: the gpt stage is slow on a CPU; this run needs roughly {estimates.duration(slow.seconds)} "
          f"here, {estimates.duration(slow.evaluation_seconds)} of it in evaluations of {plan.config.eval_iters} "
          "batches per split (a smaller --eval-iters, such as 20, makes them cheaper; or try --model mini, "
          "or a GPU).", file=sys.stderr)
    if yes or not slow.worth_asking or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return
    try:
        go = typer.confirm("Train it anyway?", default=False)
    except typer.Abort:  # end of input (Ctrl-D) answers no, after the prompt's line
        print()
        go = False
    if not go:
        print("Not trained; nothing was written.", file=sys.stderr)
        raise typer.Exit(1)
