"""`tinyshake plot` and `tinyshake runs show`: loss curves drawn from what runs recorded."""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import on_disk, table_cells, trained_home
from test_ladder import on_terminal
from test_train import assert_one_line_error
from tinyshake.store import record
from tinyshake.cli import app

HEAD = ["--model", "head", "--max-iters", "30", "--eval-interval", "10", "--eval-iters", "2", "--batch-size", "4",
        "--device", "cpu", "--sample-chars", "0"]
RUNS = {"a": HEAD, "b": [*HEAD, "--lr", "1e-2"], "c": [*HEAD[:1], "bigram", *HEAD[2:]]}
ESCAPE = "\x1b"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_file) -> Path:
    """Three short runs (two heads at different rates, a bigram), trained once for the whole module."""
    return trained_home(tmp_path_factory, corpus_file, RUNS) / "runs"


@pytest.fixture
def runs(trained, home) -> Path:
    """This test's home holds the three runs."""
    shutil.copytree(trained, home / "runs")
    return home / "runs"


def cli(*args: str, code: int = 0, **env: str):
    result = CliRunner().invoke(app, list(args), env=env or None)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def run_column(output: str) -> list[str]:
    """The runs that the piped table under the chart lists, in its order."""
    lines = output.splitlines()
    header = next(i for i, text in enumerate(lines) if table_cells(text)[:2] == ["run", "stage"])
    return [table_cells(text)[0] for text in lines[header + 1:] if text.strip()]


def legend(output: str) -> list[tuple[str, str]]:
    """The plain chart's legend: (marker, label) pairs from its line under the step scale."""
    lines = output.splitlines()
    line = lines[next(i for i, text in enumerate(lines) if text.rstrip().endswith("step")) + 1]
    return re.findall(r"(\S) (\S+(?: \S+)?)(?:   |$)", line.strip())


def plot_area(output: str) -> str:
    """The rows between the title and the axis, without their tick labels."""
    lines = output.splitlines()
    axis = next(i for i, text in enumerate(lines) if "└" in text)
    return "\n".join(text.split("┤" if "┤" in text else "│", 1)[1] for text in lines[1:axis])


def top_tick(output: str) -> float:
    return float(output.splitlines()[1].split("┤")[0])


def test_plot_of_several_runs_has_a_legend_with_every_run_and_draws_each(runs):
    result = cli("plot", "a", "b", "c")
    assert legend(result.stdout) == [("*", "a"), ("o", "b"), ("+", "c")]  # the title names the split
    area = plot_area(result.stdout)
    assert all(marker in area for marker in "*o+")
    assert run_column(result.stdout) == ["a", "b", "c"]


def test_a_pattern_picks_runs_in_the_order_they_were_made(runs):
    assert [label for _, label in legend(cli("plot", "[ab]").stdout)] == ["a", "b"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_split_chooses_the_curves_and_the_scale(runs, split):
    result = cli("plot", "a", "--split", split)
    assert result.stdout.splitlines()[0] == f"{split} loss"
    assert legend(result.stdout) == [("*", split)]
    stored = on_disk("a")
    values = [m[split] for m in stored["metrics"]] + [stored["final"][split]]
    assert top_tick(result.stdout) == pytest.approx(max(values), abs=0.005)


def test_a_long_legend_wraps_within_the_width(runs):
    result = cli("plot", "a", "b", "c", "--split", "both", COLUMNS="40")
    lines = result.stdout.splitlines()
    start = next(i for i, text in enumerate(lines) if text.rstrip().endswith("step")) + 1
    end = next(i for i, text in enumerate(lines) if table_cells(text)[:2] == ["run", "stage"])
    entries = " ".join(lines[start:end])
    assert end - start > 1 and all(len(line) <= 40 for line in lines[start:end])
    assert all(label in entries for label in ("a train", "a val", "b train", "b val", "c train", "c val"))


def test_split_both_draws_train_and_val_of_each_run(runs):
    result = cli("plot", "a", "c", "--split", "both")
    assert legend(result.stdout) == [("*", "a train"), ("o", "a val"), ("+", "c train"), ("x", "c val")]


def test_a_bad_split_and_an_unknown_run_are_one_line_errors(runs):
    assert_one_line_error(cli("plot", "a", "--split", "test", code=2), "unknown split 'test'")
    assert_one_line_error(cli("plot", "a", "nope", code=2), "no run matches 'nope'")


def test_a_damaged_run_named_to_plot_is_said_to_be_damaged(runs):
    (runs / "b" / "config.json").write_text("{")
    line = assert_one_line_error(cli("plot", "a", "b", code=2), "'b'")
    assert "no run matches" not in line and "config.json" in line
    best = next((runs / "c").glob("best*"))
    best.unlink()  # a record that reads well, beside a file it names that is gone
    line = assert_one_line_error(cli("plot", "c", code=2), "'c'")
    assert "no run matches" not in line and "best file missing" in line


def test_piped_and_no_color_output_has_no_escape_codes(runs, home):
    for env in ({}, {"NO_COLOR": "1"}):
        result = cli("plot", "a", "b", **env)
        assert ESCAPE not in result.output and "*" in plot_area(result.stdout)
    code, screen = on_terminal(home, "plot", "a", "b", NO_COLOR="1")
    assert code == 0 and ESCAPE not in screen, screen  # a terminal without colour: markers, not braille
    assert legend(screen) == [("*", "a"), ("o", "b")]
    code, screen = on_terminal(home, "plot", "a", "b")
    assert code == 0 and ESCAPE in screen and re.search("[\u2801-\u28ff]", screen)  # in colour: braille dots


def test_svg_writes_a_valid_image_atomically(runs, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    target = folder / "ladder.svg"
    target.write_text("old picture")
    result = cli("plot", "a", "b", "--svg", str(target))
    assert result.stdout.splitlines()[-1] == f"Saved the chart to {target}"
    root = ET.fromstring(target.read_text(encoding="utf-8"))  # well-formed XML, the whole of it
    assert root.tag.endswith("svg")
    text = "".join(root.itertext()).replace("\xa0", " ")
    assert "━━ a" in text and "━━ b" in text and "val loss" in text
    assert sorted(os.listdir(folder)) == ["ladder.svg"]  # replaced by a rename: no temporary file left


@pytest.mark.parametrize("where", ["missing/plot.svg", "."], ids=["no folder", "a folder"])
def test_a_bad_svg_path_is_one_line_and_writes_nothing(runs, tmp_path, where):
    target = tmp_path / where
    result = cli("plot", "a", "--svg", str(target), code=2)
    assert_one_line_error(result, "cannot write", str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_runs_show_has_the_settings_every_evaluation_with_the_final_one_and_a_chart(runs):
    result = cli("runs", "show", "b")
    out = result.stdout
    assert ESCAPE not in result.output
    stored = on_disk("b")
    assert re.search(r"^stage\s+head$", out, re.M) and re.search(r"^parameters\s+7,553$", out, re.M)
    assert "learning_rate 0.01" in out and "batch_size 4" in out and "n_embd 32" in out
    for row in stored["metrics"]:
        assert re.search(rf"^ *{row['step']}  +{row['train']:.4f}  {row['val']:.4f}  ", out, re.M)  # right-aligned
    final = stored["final"]
    assert final["step"] == 30 and re.search(rf"^final 30  {final['train']:.4f}  {final['val']:.4f}  ", out, re.M)
    assert legend(out) == [("*", "train"), ("o", "val")]
    assert "*" in plot_area(out[out.index("loss\n"):]) and out.rstrip().endswith("o val")


def test_runs_show_of_a_bigram_lists_only_what_its_model_has(runs):
    model = next(line for line in cli("runs", "show", "c").stdout.splitlines() if line.startswith("model "))
    assert model.split(None, 1)[1] == "arch bigram, block_size 8"


def test_runs_show_of_an_unknown_run_is_one_line(runs):
    assert_one_line_error(cli("runs", "show", "nope", code=2), "no run named 'nope'")


def test_plot_with_no_runs_says_how_to_train_one(home):
    assert_one_line_error(CliRunner().invoke(app, ["plot"]), "there are no trained runs", "tinyshake train")


def test_plot_without_a_name_draws_the_latest_run(runs):
    result = cli("plot")
    assert run_column(result.stdout) == [record.latest()]
