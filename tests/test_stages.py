"""`tinyshake stages`: the ladder in one table, its parameter counts by arithmetic, and train's pointers to it."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from tinyshake.store import record
from tinyshake.training import stages
from tinyshake.cli import app
from tinyshake.models.model import build, count_parameters
from tinyshake.training.plan import make_config

from conftest import table_cells

WIDE = {"COLUMNS": "40"}  # narrow: piped, a row stays on one line whatever the width


def table_rows(output: str) -> dict[str, list[str]]:
    """The plain table's rows by stage: the cells of each line that starts with a stage's name."""
    rows = {}
    for line in output.splitlines():
        cells = table_cells(line)
        if cells[0] in stages.STAGES:
            rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("name", list(stages.STAGES))
def test_parameter_count_by_arithmetic_equals_the_built_models(name):
    for vocab in (65, 80):
        config = make_config(name, vocab)
        assert stages.parameter_count(stages.get(name), vocab) == count_parameters(build(config.model))


def test_the_table_lists_every_stage_with_its_size_settings_and_the_lectures_val(home):
    result = CliRunner().invoke(app, ["stages"], env=WIDE)
    assert result.exit_code == 0 and "\x1b" not in result.output
    rows = table_rows(result.stdout)
    assert list(rows) == list(stages.STAGES)
    for name, stage in stages.STAGES.items():
        cells = rows[name]
        assert cells[1] == stage.adds
        assert cells[2] == f"{stages.parameter_count(stage):,}"
        assert cells[3:5] == [str(stage.batch_size), str(stage.block_size)]
        assert cells[10] == str(stage.max_iters)
        lecture = "-" if stage.published_val is None else f"{stage.published_val:.2f}"
        assert cells[11].startswith(lecture)
        assert cells[12:] == ["-", "-", "-"]  # nothing trained yet
    assert rows["gpt-video"][11] == "1.49 (train 1.08)" and rows["gpt"][11] == "1.48"


def test_your_best_val_and_its_run_appear_after_training(cached, home):
    for run, steps in (("short", "2"), ("longer", "12")):
        trained = CliRunner().invoke(app, ["train", "--model", "head", "--run", run, "--max-iters", steps,
                                           "--eval-interval", "5", "--eval-iters", "2", "--sample-chars", "0",
                                           "--device", "cpu"])
        assert trained.exit_code == 0, trained.output
    best = min((record.read_record(r) for r in ("short", "longer")), key=lambda r: r.best_val)
    rows = table_rows(CliRunner().invoke(app, ["stages"], env=WIDE).stdout)
    assert rows["head"][12:] == [f"{best.best_val:.4f}*", f"{best.best_val / math.log(2):.4f}", best.name]  # marked
    assert rows["multihead"][12:] == ["-", "-", "-"]


def test_your_best_counts_only_runs_estimated_as_the_lecture_estimates_where_there_are_any(cached, home):
    def train(run: str, steps: str, eval_iters: str) -> float:
        trained = CliRunner().invoke(app, ["train", "--model", "bigram", "--run", run, "--max-iters", steps,
                                           "--eval-iters", eval_iters, "--sample-chars", "0", "--device", "cpu"])
        assert trained.exit_code == 0, trained.output
        return record.read_record(run).best_val

    rough = train("rough", "300", "2")
    assert CliRunner().invoke(app, ["stages", "bigram"]).stdout.count("2 batches per split, not the lecture's 200")
    lecture = train("lecture", "1", "200")
    assert lecture > rough  # the noisy run looks better, yet the lecture's estimate is the one shown
    result = CliRunner().invoke(app, ["stages"], env=WIDE)
    assert table_rows(result.stdout)["bigram"][12:] == [f"{lecture:.4f}", f"{lecture / math.log(2):.4f}", "lecture"]
    assert "not comparable" not in result.output


def test_train_help_points_to_stages(home):
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400"})  # help's boxes wrap to the width
    assert result.exit_code == 0
    assert "`tinyshake stages` shows what each adds" in " ".join(result.stdout.split())


def test_trains_header_names_what_the_stage_adds_its_settings_and_the_lectures_val(cached, home):
    result = CliRunner().invoke(app, ["train", "--model", "ffwd", "--max-iters", "2", "--eval-iters", "2",
                                      "--batch-size", "8", "--sample-chars", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    header = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]  # busy: a note first
    assert header[0].startswith("Training run ffwd: ffwd (8,609 parameters; the lecture reached val 2.24) on cpu, ")
    assert " thread" in header[0]  # and the CPU threads it uses, with why
    assert header[1] == f"  {stages.get('ffwd').adds}"
    assert header[2] == "  batch 8, block 8, width 32, heads 4, layers 1, lr 1e-3, steps 2"  # the run's own

