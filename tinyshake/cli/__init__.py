"""The command-line app: one module per command, each rendering what the core returns."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tinyshake import __version__
from tinyshake.cli import bench as bench_cmd
from tinyshake.cli import chat as chat_cmd
from tinyshake.cli import demo as demo_cmd
from tinyshake.cli import eval as eval_cmd
from tinyshake.cli import fetch, info, runs, train
from tinyshake.cli import ladder as ladder_cmd
from tinyshake.cli import plot as plot_cmd
from tinyshake.cli import stages as stages_cmd

app = typer.Typer(
    name="tinyshake",
    help="Build a GPT from scratch on tiny Shakespeare: fetch the corpus, train the lecture's models, chat, and demos.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"tinyshake {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Build a GPT from scratch on tiny Shakespeare, from the terminal."""


app.command("fetch")(fetch.fetch)
app.command("train")(train.train)
app.command("chat")(chat_cmd.chat)
app.command("eval")(eval_cmd.eval_run)
app.add_typer(runs.app, name="runs")
app.command("demo")(demo_cmd.demo)
app.command("bench")(bench_cmd.bench_cmd)
app.command("info")(info.info)
app.command("stages")(stages_cmd.stages_cmd)
app.command("plot")(plot_cmd.plot)
app.command("ladder")(ladder_cmd.ladder)


def main() -> None:
    """Console-script entry point."""
    app()
