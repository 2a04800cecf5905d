"""Checkpoints on disk: they round-trip, a failed save leaves the last one whole, damage is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from test_train import (
    TINY, assert_one_line_error, import_tiny_corpus, snapshot, tiny_run, train_cli, weights,
)
from tinyshake import checkpoint, corpus, record as record_module, train as core
from tinyshake.errors import TinyshakeError


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
            checkpoint.load_state("c", checkpoint.read_record("c")) if target == "state" else checkpoint.load("c")


def test_overwrite_replaces_a_damaged_run(cached):
    tiny_run("c", "--max-iters", "2", "--eval-interval", "2")
    files("c")["config"].write_text("{")
    assert_one_line_error(train_cli("--run", "c", code=2), "is damaged", "--overwrite")
    tiny_run("c", "--max-iters", "2", "--eval-interval", "2", "--overwrite")
    assert checkpoint.load("c").record["step"] == 2


def test_resuming_against_another_vocabulary_is_refused(cached, home, tmp_path):
    import_tiny_corpus(tmp_path)
    tiny_run("t", "--corpus", "tiny", "--max-iters", "3", "--eval-interval", "2")
    before = snapshot(home)
    assert_one_line_error(train_cli("--run", "t", "--resume", "--corpus", "tinyshakespeare", "--max-iters", "5", code=2),
                          "run 't' was trained on another vocabulary than corpus 'tinyshakespeare'")
    assert snapshot(home) == before
    tiny_run("t", "--resume", "--max-iters", "5")  # without --corpus it goes on with its own
    assert checkpoint.read_record("t")["corpus"]["name"] == "tiny"
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
    loaded = checkpoint.load("rt")
    assert loaded.config == model.config
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.tokenizer.chars == corpus.load().tokenizer.chars
    state = checkpoint.load_state("rt", loaded.record)
    assert state["step"] == loaded.record["step"] == 3


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
        checkpoint.save("keep", other, dict(record), {"step": record["step"], "optimizer": {}, "rng": {}})
    assert checkpoint.read_record("keep") == record
    assert all(torch.equal(kept[k], v) for k, v in weights("keep").items())  # same step, new weights: other files


def test_a_state_without_its_step_or_rng_is_refused(cached):
    finished_model("s", 2)
    record = checkpoint.read_record("s")
    folder = checkpoint.run_dir("s")
    checkpoint.save("s", checkpoint.load("s").model, record, {"optimizer": {}})
    with pytest.raises(checkpoint.CheckpointError, match="lacks its step, optimizer or RNG state"):
        checkpoint.load_state("s", checkpoint.read_record("s"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", *checkpoint.read_record("s")["files"].values()])
