"""Checkpoints on disk: they round-trip, a failed save leaves the last one whole, damage is a one-line error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from conftest import on_disk, subprocess_env
from test_train import (
    TINY, assert_one_line_error, import_tiny_corpus, snapshot, tiny_run, train_cli, weights,
)
from tinyshake import checkpoint, corpus
from tinyshake.store import record as record_module
from tinyshake.training import train as core
from tinyshake.cli import app
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.models.model import ModelConfig, build


def files(run: str) -> dict[str, Path]:
    """The run's config.json and the weights and state files it names."""
    folder = checkpoint.run_dir(run)
    record = json.loads((folder / checkpoint.CONFIG).read_text())
    return {"config": folder / checkpoint.CONFIG, "weights": folder / record["files"]["weights"],
            "state": folder / record["files"]["state"]}


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """A corruption that loads config.json, changes it, and writes it back as valid JSON."""
    def apply(path: Path) -> None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))
    return apply


CORRUPTIONS = {
    "truncated-weights": ("weights", truncate, "is corrupt or truncated (SHA-256 mismatch)"),
    "flipped-weights": ("weights", flip_middle_byte, "is corrupt or truncated (SHA-256 mismatch)"),
    "flipped-state": ("state", flip_middle_byte, "is corrupt or truncated (SHA-256 mismatch)"),
    "missing-weights": ("weights", Path.unlink, "is missing"),
    "garbage-config": ("config", lambda p: p.write_bytes(b"\xff\xfe{not json at all"), "config.json is not UTF-8"),
    "truncated-config": ("config", truncate, "config.json is not valid JSON"),
    "config-not-an-object": ("config", lambda p: p.write_text("[]"), "config.json is not a JSON object"),
    "weights-outside-the-run": ("config", edit_config(lambda r: r["files"].update(weights="../../x")),
                                "does not match its SHA-256"),
    "vocab-not-a-list": ("config", edit_config(lambda r: r.update(vocab="abc")), "does not match its SHA-256"),
    "settings-of-the-wrong-type": ("config", edit_config(lambda r: r["hyper"].update(batch_size="many")),
                                   "does not match its SHA-256"),
}


@pytest.mark.parametrize("target, damage, message", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_a_damaged_checkpoint_is_a_one_line_error_on_resume(cached, home, target, damage, message):
    tiny_run("c", "--max-iters", "3", "--eval-interval", "2")
    damage(files("c")[target])
    before = snapshot(home)
    assert_one_line_error(train_cli("--run", "c", "--resume", "--max-iters", "6", code=2), message)
    assert snapshot(home) == before
    if target != "config":
        with pytest.raises(checkpoint.CheckpointError, match="run|checkpoint"):
            checkpoint.load_state(checkpoint.read_record("c")) if target == "state" else checkpoint.load("c", weights="last")


def test_overwrite_replaces_a_damaged_run(cached):
    tiny_run("c", "--max-iters", "2", "--eval-interval", "2")
    files("c")["config"].write_text("{")
    assert_one_line_error(train_cli("--run", "c", code=2), "is damaged", "--overwrite")
    tiny_run("c", "--max-iters", "2", "--eval-interval", "2", "--overwrite")
    assert checkpoint.load("c").record.step == 2


def test_resuming_against_another_vocabulary_is_refused(cached, home, tmp_path):
    import_tiny_corpus(tmp_path)
    tiny_run("t", "--corpus", "tiny", "--max-iters", "3", "--eval-interval", "2")
    before = snapshot(home)
    assert_one_line_error(train_cli("--run", "t", "--resume", "--corpus", "tinyshakespeare", "--max-iters", "5", code=2),
                          "run 't' was trained on another vocabulary than corpus 'tinyshakespeare'")
    assert snapshot(home) == before
    tiny_run("t", "--resume", "--max-iters", "5")  # without --corpus it goes on with its own
    assert checkpoint.read_record("t").corpus_name == "tiny"
    assert checkpoint.load("t").tokenizer.chars == corpus.load("tiny").tokenizer.chars


def finished_model(run: str, max_iters: int) -> torch.nn.Module:
    """Train the tiny config in-process and return the model the Finished event hands back."""
    data = corpus.load()
    config = core.make_config("mini", data.tokenizer.vocab_size, run=run, max_iters=max_iters, eval_interval=2, **TINY)
    *_, finished = core.train(config, data)
    assert isinstance(finished, core.Finished)
    return finished.model


def test_a_checkpoint_loads_back_the_trained_weights_and_its_vocabulary(cached):
    model = finished_model("rt", 3)
    loaded = checkpoint.load("rt", weights="last")
    assert loaded.config == model.config
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.tokenizer.chars == corpus.load().tokenizer.chars
    state = checkpoint.load_state(loaded.record)
    assert state["step"] == loaded.record.step == 3


def test_a_save_that_fails_before_its_commit_leaves_the_last_checkpoint_whole(cached, monkeypatch):
    finished_model("keep", 3)
    record, kept = checkpoint.read_record("keep"), weights("keep")
    real_write = record_module.write_bytes

    def fail_at_commit(dest: Path, data: bytes) -> None:
        if dest.name == checkpoint.CONFIG:
            raise TinyshakeError("disk full")
        real_write(dest, data)

    other = checkpoint.load("keep").model
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    with monkeypatch.context() as patch, pytest.raises(TinyshakeError, match="disk full"):
        patch.setattr(record_module, "write_bytes", fail_at_commit)
        checkpoint.save("keep", other, on_disk("keep"), {"step": record.step, "optimizer": {}, "rng": {}})
    assert checkpoint.read_record("keep") == record
    assert all(torch.equal(kept[k], v) for k, v in weights("keep").items())  # same step, new weights: other files


def test_a_state_without_its_step_or_rng_is_refused(cached):
    finished_model("s", 2)
    record = on_disk("s")
    folder = checkpoint.run_dir("s")
    checkpoint.save("s", checkpoint.load("s").model, record, {"optimizer": {}})
    with pytest.raises(checkpoint.CheckpointError, match="lacks its step, optimizer or RNG state"):
        checkpoint.load_state(checkpoint.read_record("s"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", *on_disk("s")["files"].values()])


# -- runs saved directly (no training): the record, the best weights, leftovers, readers ------------------------

TINY_MODEL = dict(block_size=8, n_embd=16, n_head=2, n_layer=1)


def saved_run(name: str, chars: list[str], evals: tuple[tuple[int, float], ...] = ((0, 4.0),), best_at: int = 0,
              corpus_name: str = corpus.DEFAULT_CORPUS, corpus_sha: str = "0" * 64,
              seed: int = 0) -> list[torch.nn.Module]:
    """Save a tiny model once per evaluation (fresh weights each time); the save at ``best_at`` is the best.

    Returns the saved models in order, so tests can compare what is loaded.
    """
    config = ModelConfig(vocab_size=len(chars), **TINY_MODEL)
    base = {"name": name, "stage": "mini", "model": config.to_dict(), "hyper": {"batch_size": 4, "seed": 1337},
            "vocab": chars, "corpus": {"name": corpus_name, "sha256": corpus_sha}, "parameters": 1,
            "max_iters": evals[-1][0], "created": None}
    models, metrics = [], []
    for i, (step, val) in enumerate(evals):
        torch.manual_seed(seed + i)
        model = build(config)
        metrics.append({"step": step, "train": val, "val": val})
        checkpoint.save(name, model, dict(base, step=step, metrics=list(metrics), best_val=min(m["val"] for m in metrics)),
                        {"step": step, "optimizer": {}, "rng": {"cpu": torch.get_rng_state()}}, best=step == best_at)
        models.append(model)
    return models


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    theirs = b.state_dict()
    return all(torch.equal(v, theirs[k]) for k, v in a.state_dict().items())


def reseal(name: str, change: Callable[[dict], None]) -> None:
    """Edit a run's record and seal it again with a correct hash: what is left to catch is the type check."""
    path = checkpoint.run_dir(name) / checkpoint.CONFIG
    stored = json.loads(path.read_text())
    change(stored)
    stored[record_module.DIGEST] = record_module.digest(stored)
    path.write_text(json.dumps(stored))


CHARS = list("\n !',.:;?abehilnoqrstuvwxzTW")


def test_the_best_weights_are_kept_beside_the_latest_and_chosen_by_default():
    first, middle, last = saved_run("b", CHARS, ((0, 4.0), (5, 3.0), (10, 3.5)), best_at=5)
    stored = on_disk("b")
    assert (stored["best_step"], stored["best_val"], stored["step"]) == (5, 3.0, 10)
    best, latest = checkpoint.load("b"), checkpoint.load("b", weights="last")
    assert (best.weights, best.step, latest.weights, latest.step) == ("best", 5, "last", 10)
    assert same_weights(best.model, middle) and same_weights(latest.model, last)
    folder = checkpoint.run_dir("b")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", *stored["files"].values()])
    with pytest.raises(UsageError, match="unknown weights 'first'"):
        checkpoint.load("b", weights="first")


def test_a_run_without_a_best_loads_its_last_weights_and_overwrite_never_inherits_a_best():
    saved_run("o", CHARS, ((0, 4.0), (5, 3.0)), best_at=0)
    (model,) = saved_run("o", CHARS, ((0, 9.0),), best_at=-1, seed=7)  # a new run in the folder, no best yet
    stored = on_disk("o")
    assert "best" not in stored["files"] and stored["best_step"] is None
    loaded = checkpoint.load("o")
    assert loaded.weights == "last" and same_weights(loaded.model, model)


def test_the_next_save_removes_leftovers_of_kills_and_full_disks_but_never_the_best():
    saved_run("l", CHARS, ((0, 4.0), (5, 3.0)), best_at=0)
    folder = checkpoint.run_dir("l")
    leftovers = [".config.json.k1ll3d.part", ".model-0000009-abc.safetensors.x1.part", "model-0000009-0123456789ab.safetensors",
                 "state-0000009-0123456789ab.pt"]
    for name in leftovers:
        (folder / name).write_bytes(b"half")
    (folder / "notes.txt").write_text("mine")  # not a checkpoint file: never touched
    saved_run("l", CHARS, ((0, 4.0), (5, 3.0), (7, 3.5)), best_at=0)
    stored = on_disk("l")
    assert stored["best_step"] == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", "notes.txt", *stored["files"].values()])


def test_swapping_two_characters_of_the_vocabulary_is_refused_by_every_reader(cached):
    tiny_run("v", "--max-iters", "3", "--eval-interval", "2")
    path = files("v")["config"]
    path.write_text(path.read_text().replace('":"', '"\\u0000"').replace('";"', '":"').replace('"\\u0000"', '";"'))
    assert json.loads(path.read_text())["vocab"] != corpus.load().tokenizer.chars  # the swap happened
    for result in (CliRunner().invoke(app, ["chat", "--run", "v", "--prompt", "To be"]),
                   CliRunner().invoke(app, ["eval", "v"]),
                   train_cli("--run", "v", "--resume", "--max-iters", "5", code=2)):
        assert_one_line_error(result, "does not match its SHA-256")


def test_a_reader_whose_files_a_concurrent_save_replaced_reads_the_fresh_record(monkeypatch):
    saved_run("c", CHARS, ((0, 4.0),))
    real_read = checkpoint.read_file
    newer: list[torch.nn.Module] = []

    def save_first(stored: checkpoint.RunRecord, kind: str) -> bytes:
        if not newer:  # a training saves between this reader's config.json and its weights
            newer.extend(saved_run("c", CHARS, ((0, 4.0), (5, 3.0)), best_at=5, seed=3)[1:])
        return real_read(stored, kind)

    monkeypatch.setattr(checkpoint, "read_file", save_first)
    loaded = checkpoint.load("c")
    assert loaded.step == 5 and same_weights(loaded.model, newer[0])


SAVER = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from test_checkpoint import CHARS, saved_run
for i in range(int(sys.argv[2])):
    saved_run("live", CHARS, ((0, 4.0), (i + 1, 3.0 - i / 1000)), best_at=i + 1, seed=i)
"""


def test_readers_of_a_run_being_saved_again_and_again_always_see_one_checkpoint(home):
    saved_run("live", CHARS, ((0, 4.0),))
    saver = subprocess.Popen([sys.executable, "-c", SAVER, str(Path(__file__).parent), "150"],
                             env=subprocess_env(home), stderr=subprocess.PIPE, text=True)
    loads = 0
    try:
        while saver.poll() is None or loads == 0:
            loaded = checkpoint.load("live", weights="best" if loads % 2 else "last")
            assert loaded.tokenizer.chars == CHARS
            assert [r for r in record_module.list_runs() if r.damaged] == []
            loads += 1
    finally:
        saver.wait(timeout=120)
    assert saver.returncode == 0, saver.stderr.read()
    assert loads > 1


def test_a_run_name_is_matched_whole():
    for bad in ("nl\n", "", "a/b", "..", "-x", "x" * 65):
        with pytest.raises(UsageError, match="invalid run name"):
            checkpoint.run_dir(bad)
    result = CliRunner().invoke(app, ["runs", "rm", "nl\n"])
    assert_one_line_error(result, "invalid run name")


def test_the_record_modules_and_the_runs_and_eval_commands_import_no_torch():
    # tinyshake.cli's __init__ registers every command; these modules themselves must load without torch
    code = ("import sys, types, pathlib, importlib.util\n"
            "root = pathlib.Path(importlib.util.find_spec('tinyshake').origin).parent\n"
            "cli = types.ModuleType('tinyshake.cli'); cli.__path__ = [str(root / 'cli')]; sys.modules['tinyshake.cli'] = cli\n"
            "import tinyshake.store.record, tinyshake.store.runlock, tinyshake.cli.runs, tinyshake.cli.eval\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
