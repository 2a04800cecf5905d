"""Every view fits a real terminal of 80 and of 120 columns: no line wider than it, no word or number cut (#21)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from tinyshake.training import stages
from tinyshake.cli import app
from tinyshake.cli import stages as stages_cmd
from tinyshake.cli._fit import Col, fitted_table
from tinyshake.cli._stage_text import published, settings

WIDTHS = [80, 120]
ESCAPES = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-B]|[=>78])")
BORDERS = "│┃"


def screen_lines(output: str) -> list[str]:
    """What a terminal shows, line by line: escape codes gone, split where the cursor goes back or down."""
    return re.split(r"\r\n|\r|\n", ESCAPES.sub("", output))


def shown(terminal, home: Path, columns: int, *args: str) -> list[str]:
    """Run ``tinyshake *args`` on a terminal ``columns`` wide; its screen lines, each checked to fit."""
    term = terminal(home, *args, columns=columns)
    assert term.wait(timeout=120) == 0, term.output[-2000:]
    lines = screen_lines(term.output)
    too_wide = [line for line in lines if cell_len(line) > columns]
    assert not too_wide, "\n".join(too_wide)
    return lines


def table_rows(lines: list[str]) -> list[list[str]]:
    """The cells of each line of a table drawn with borders."""
    rows = [[cell.strip() for cell in re.split(f"[{BORDERS}]", line)[1:-1]] for line in lines if line[:1] in BORDERS]
    return [row for row in rows if row]


def stage_words() -> set[str]:
    """Every word that a cell of the stage table may hold, whole."""
    words = {"-"} | {word for col in stages_cmd.COLUMNS for word in col.header.split()}
    for stage in stages.STAGES.values():
        texts = [stage.name, stage.adds, f"{stages.parameter_count(stage):,}", published(stage),
                 *settings(stage).values()]
        words |= {word for text in texts for word in text.split()}
    return words


@pytest.mark.parametrize("columns", WIDTHS)
def test_the_stage_table_fits_and_splits_no_word(terminal, home, columns):
    lines = shown(terminal, home, columns, "stages")
    rows = table_rows(lines)
    allowed = stage_words()
    split = {word for row in rows for cell in row for word in cell.split()} - allowed
    assert not split  # a piece of a word ("Embedd", "dropou") is no word of the table
    assert [row[0] for row in rows if row[0]][-len(stages.STAGES):] == list(stages.STAGES)
    assert len(lines) < 60  # the ladder at a glance, not a page per stage


def test_a_stage_in_full_shows_its_settings(home):
    result = CliRunner().invoke(app, ["stages", "gpt"])
    assert result.exit_code == 0
    shown_settings = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.strip()}
    assert shown_settings["block"] == "256" and shown_settings["dropout"] == "0.2" and shown_settings["lr"] == "3e-4"


@pytest.mark.parametrize("columns", WIDTHS)
def test_runs_keeps_names_and_steps_whole(cached, terminal, home, columns):
    for name, stage in (("ladder-multihead", "multihead"), ("ladder-mini", "mini")):
        trained = CliRunner().invoke(app, ["train", "--model", stage, "--run", name, "--max-iters", "2",
                                           "--eval-iters", "1", "--batch-size", "2", "--sample-chars", "0"])
        assert trained.exit_code == 0, trained.output
    rows = table_rows(shown(terminal, home, columns, "runs"))
    assert {row[0] for row in rows} >= {"ladder-multihead", "ladder-mini"}
    assert all("2/2" in row for row in rows if row[0].startswith("ladder-"))  # the steps cell, whole, where it is


@pytest.mark.parametrize("columns", WIDTHS)
def test_help_wraps_with_a_hanging_indent_and_flags_show_no_metavar(terminal, home, columns):
    lines = shown(terminal, home, columns, "train", "-h")
    options = lines[lines.index("Options:") + 1:]
    assert all(line.startswith("  ") for line in options if line.strip())
    continued = [line for line in options if line.startswith(" " * 10)]
    assert continued  # wrapped descriptions go on under the description, not under the flags
    assert "<bool>" not in "\n".join(lines)
    assert re.search(r"^  --plain +Train", "\n".join(lines), re.M)


@pytest.mark.parametrize("columns", [50, *WIDTHS])
def test_demo_code_wraps_under_the_code_not_under_the_prompt(terminal, home, columns):
    lines = shown(terminal, home, columns, "demo", "attention")
    masked = next(i for i, line in enumerate(lines) if ">>> wei = wei.masked_fill" in line)
    if columns == 50:  # this line of code wraps: its rest is indented past the prompt, unlike output
        prompt_at = lines[masked].index(">>>")
        assert lines[masked + 1][:prompt_at + 4].strip(" │") == ""
        assert lines[masked + 1][prompt_at + 4:].strip(" │")


@pytest.mark.parametrize("columns", WIDTHS)
def test_the_training_bar_keeps_its_step_count_whole(cached, terminal, home, columns):
    lines = shown(terminal, home, columns, "train", "--model", "bigram", "--max-iters", "1500", "--eval-interval",
                  "1000", "--eval-iters", "1", "--sample-chars", "0", "--device", "cpu")
    counts = [re.search(r"\b(\d+)/1500\b", line) for line in lines if "it/s" in line]
    assert counts and all(counts)
    assert (" tok/s" in "\n".join(lines)) == (columns >= 120)  # the narrow bar leaves tokens/s out


@pytest.mark.parametrize("columns", WIDTHS)
def test_a_fitted_table_drops_spare_columns_and_breaks_no_number(columns):
    cols = [Col("name", "left"), Col("tokens per second"), Col("notes", "left", wrap=True),
            *(Col(f"extra {i}", spare=i) for i in range(1, 9))]
    row = ["ladder-multihead", "431,000", "a few words that may wrap between them", *(f"{i},234,567" for i in range(1, 9))]
    console = Console(width=columns, force_terminal=True, color_system=None)
    with console.capture() as captured:
        console.print(fitted_table(console, cols, [row]))
    lines = captured.get().splitlines()
    assert max(cell_len(line) for line in lines) <= columns
    kept = [i for i in range(1, 9) if f"{i},234,567" in captured.get()]
    assert kept == list(range(1, len(kept) + 1)) and len(kept) < 8  # the highest spare goes first
    assert "ladder-multihead" in captured.get() and "431,000" in captured.get()
