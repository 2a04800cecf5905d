"""Records that pass their hash but still cannot be trusted, and run folders that a user copied (issue #11)."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from test_checkpoint import reseal
from test_train import assert_one_line_error, tiny_run, train_cli
from tinyshake import checkpoint
from tinyshake.cli import app


def test_a_copied_run_folder_resumes_as_the_copy_and_leaves_the_original_alone(cached):
    tiny_run("orig", "--max-iters", "3", "--eval-interval", "3")
    shutil.copytree(checkpoint.run_dir("orig"), checkpoint.run_dir("copy"))
    result = tiny_run("copy", "--resume", "--max-iters", "5")
    assert "Training run copy" in result.stderr
    assert checkpoint.read_record("copy").step == 5
    assert checkpoint.read_record("orig").step == 3


@pytest.mark.parametrize("field, value", [("batch_size", 1.5), ("max_iters", "x"), ("seed", True)])
def test_a_resealed_setting_of_the_wrong_type_is_one_line_on_resume(cached, field, value):
    tiny_run("r", "--max-iters", "2", "--eval-interval", "2")
    reseal("r", lambda stored: stored["hyper"].update({field: value}))
    assert_one_line_error(train_cli("--run", "r", "--resume", "--max-iters", "4", code=2), "unreadable")


@pytest.mark.parametrize("field, value", [("block_size", 0), ("n_head", -1), ("n_head", 3)])
def test_a_resealed_impossible_model_is_one_line_for_every_reader(cached, field, value):
    tiny_run("m", "--max-iters", "2", "--eval-interval", "2")
    reseal("m", lambda stored: stored["model"].update({field: value}))
    for args in (["eval", "m"], ["inspect", "next", "m", "--prompt", "a"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and "retrain it with --overwrite" in result.stderr, result.stderr


def test_runs_rm_of_a_linked_run_deletes_nothing_behind_the_link(cached, home, tmp_path):
    tiny_run("real", "--max-iters", "2", "--eval-interval", "2")
    outside = tmp_path / "elsewhere"
    shutil.move(checkpoint.run_dir("real"), outside)
    checkpoint.run_dir("real").symlink_to(outside)
    result = CliRunner().invoke(app, ["runs", "rm", "real"])
    assert_one_line_error(result, "is a link to")
    assert (outside / "config.json").exists() and checkpoint.run_dir("real").is_symlink()


def one_line_everywhere(run: str, *words: str) -> None:
    """Every reader of ``run`` (the torch-free ones, the model loaders and a resume) refuses it in one line."""
    for args in (["runs", "show", run], ["eval", run], ["inspect", "next", run, "--prompt", "a"],
                 ["chat", "--run", run, "--prompt", "a"], ["train", "--run", run, "--resume", "--max-iters", "9"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert_one_line_error(result, *words)


def test_a_record_resealed_with_more_layers_than_its_weights_hold_is_refused_before_anything_is_built(cached):
    tiny_run("big", "--max-iters", "2", "--eval-interval", "2")
    reseal("big", lambda stored: stored["model"].update(n_layer=200000))
    one_line_everywhere("big", "run 'big' is damaged (its model needs at least", "its weights file holds at most")
    listed = CliRunner().invoke(app, ["runs"])
    assert "damaged: its model needs at least" in listed.stdout


def test_a_config_json_linked_to_another_runs_is_damaged_for_every_reader(cached):
    tiny_run("one", "--max-iters", "2", "--eval-interval", "2")
    tiny_run("two", "--max-iters", "3", "--eval-interval", "3")
    config = checkpoint.run_dir("two") / checkpoint.CONFIG
    config.unlink()
    config.symlink_to(checkpoint.run_dir("one") / checkpoint.CONFIG)
    one_line_everywhere("two", "run 'two' is damaged (config.json is a link")
    rows = {line.split()[0]: line for line in CliRunner().invoke(app, ["runs"]).stdout.splitlines()[1:]}
    assert "damaged: config.json is a link" in rows["two"] and rows["one"].rstrip().endswith("ok")


@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_left_by_a_killed_first_save_is_no_run_and_a_new_one_starts_there(cached, resume):
    folder = checkpoint.run_dir("ks1")
    folder.mkdir(parents=True)
    leftover = folder / "model-0000000-0123456789ab.safetensors.part"
    leftover.write_bytes(b"half a save")
    if resume:
        assert_one_line_error(train_cli("--run", "ks1", "--resume", code=2), "there is no run 'ks1' to resume")
    result = tiny_run("ks1", "--max-iters", "2", "--eval-interval", "2")
    assert "Training run ks1" in result.stderr and checkpoint.read_record("ks1").step == 2
    assert not leftover.exists()  # the first save cleared what the killed one left
