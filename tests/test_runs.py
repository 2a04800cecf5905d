"""``runs``, ``runs rm`` and ``eval``: the lock is honoured, damage is listed with its reason, values are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import on_disk, subprocess_env, table_cells
from test_checkpoint import CHARS, reseal, saved_run
from test_train import TINYSHAKE, assert_one_line_error
from tinyshake import checkpoint, corpus
from tinyshake.store import record
from tinyshake.cli import app
from tinyshake.evaluate import split_loss

HOLD = "import sys, time\nfrom tinyshake.store import runlock\nwith runlock.hold(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_runs_rm_refuses_a_run_another_process_holds_and_deletes_it_once_that_process_is_killed(home):
    saved_run("t", CHARS)
    child = subprocess.Popen([sys.executable, "-c", HOLD, "t"], env=subprocess_env(home), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        assert_one_line_error(invoke("runs", "rm", "t"), f"run 't' is in use by process {child.pid} (train)")
        assert f"in use by process {child.pid}" in invoke("runs").stdout
        assert checkpoint.exists("t")
    finally:
        child.kill()  # SIGKILL: the OS releases the lock
        child.wait()
    done = subprocess.run([TINYSHAKE, "runs", "rm", "t"], env=subprocess_env(home), capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "Deleted run t\n")


def test_two_runs_rm_at_once_never_give_a_traceback(home):
    saved_run("twice", CHARS)
    procs = [subprocess.Popen([TINYSHAKE, "runs", "rm", "twice"], env=subprocess_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2]
    error = next(err for code, err in results if code == 2)
    assert error.count("\n") == 1 and error.startswith("Error: ") and "Traceback" not in error


def test_runs_rm_of_a_folder_it_may_not_delete_is_one_line_and_keeps_the_run(home):
    saved_run("kept", CHARS)
    folder = checkpoint.run_dir("kept")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        done = subprocess.run([TINYSHAKE, "runs", "rm", "kept"], env=subprocess_env(home), capture_output=True, text=True)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert done.returncode == 1 and done.stderr.startswith("Error: cannot delete run 'kept'")
    assert done.stderr.count("\n") == 1 and checkpoint.load("kept").weights == "best"


WRONG = {
    "corpus-a-string": (lambda r: r.update(corpus="x"), "field 'corpus'"),
    "parameters-many": (lambda r: r.update(parameters="many"), "field 'parameters'"),
    "updated-a-number": (lambda r: r.update(updated=5), "field 'updated'"),
    "step-fractional": (lambda r: r.update(step=1.5), "field 'step'"),
    "seed-a-list": (lambda r: r["hyper"].update(seed=["x"]), "field 'hyper'"),
    "best-huge": (lambda r: r.update(best_val=1e400), "field 'best_val'"),
    "vocab-null": (lambda r: r.update(vocab=None), "field 'vocab'"),
    "model-n-embd-a-string": (lambda r: r["model"].update(n_embd="x"), None),
}


@pytest.mark.parametrize("change, reason", list(WRONG.values()), ids=list(WRONG))
def test_a_record_with_a_field_of_the_wrong_type_is_listed_as_damaged_and_breaks_no_other_run(cached, change, reason):
    chars = corpus.load().tokenizer.chars
    saved_run("good", chars)
    saved_run("bad", chars)
    reseal("bad", change)
    listing = invoke("runs")
    assert listing.exit_code == 0 and "Traceback" not in listing.output
    bad, good = (next(line for line in listing.stdout.splitlines() if line.startswith(n))
                 for n in ("bad ", "good "))
    assert "ok" in good
    assert ("damaged: " + reason in bad) if reason else "ok" in bad
    for args in (["eval", "bad"], ["chat", "--run", "bad", "--prompt", "a"]):
        assert_one_line_error(invoke(*args), "bad")
    assert invoke("eval", "good").exit_code == 0


def test_damaged_files_huge_records_and_foreign_json_are_listed_with_their_reason(home):
    for name in ("missing", "truncated", "huge", "text", "inf", "bare"):
        saved_run(name, CHARS)
    folder = checkpoint.run_dir
    Path(folder("missing"), checkpoint.read_record("missing").files["best"].name).unlink()
    weights = Path(folder("truncated"), checkpoint.read_record("truncated").files["weights"].name)
    weights.write_bytes(weights.read_bytes()[:100])
    with open(folder("huge") / "config.json", "r+b") as handle:
        handle.truncate(400 << 20)  # sparse: 400 MB that must not be read whole
    (folder("text") / "config.json").write_text('"a JSON string"')
    (folder("inf") / "config.json").write_text('{"format": 2, "step": 1e400}')
    (folder("bare") / "config.json").unlink()
    saved_run("markup", CHARS)
    (folder("markup") / "config.json").write_text('{"format": "[/]x[bold]"}')  # data, not Rich markup
    listing = invoke("runs")
    assert listing.exit_code == 0 and "Traceback" not in listing.output
    rows = {table_cells(line)[0]: line for line in listing.stdout.splitlines()}
    expected = {"missing": "best file missing", "truncated": "weights file is 100 bytes", "huge": "larger than 1 MiB",
                "text": "not a JSON object", "inf": "does not match its SHA-256", "bare": "no config.json",
                "markup": "'[/]x[bold]'"}
    for name, reason in expected.items():
        assert "damaged: " in rows[name] and reason in rows[name], rows[name]


def test_eval_scores_the_best_weights_by_default_and_the_last_on_request(cached):
    data = corpus.load()
    _, best, last = saved_run("e", data.tokenizer.chars, ((0, 4.0), (5, 3.0), (9, 3.5)), best_at=5,
                              corpus_sha=data.sha256)
    for args, model, words in ((["eval", "e"], best, "e (best weights, step 5): full val loss"),
                               (["eval", "e", "--weights", "last"], last, "e (last weights, step 9): full val loss")):
        result = invoke(*args)
        assert result.exit_code == 0 and result.stderr == ""
        assert result.stdout.startswith(words)
        assert f"{split_loss(model, data.val, 8, data.tokenizer).loss:.4f} " in result.stdout


def test_eval_refuses_an_empty_name_a_missing_run_and_a_non_finite_loss(cached):
    assert_one_line_error(invoke("eval", ""), "invalid run name ''")
    assert_one_line_error(invoke("eval", "nope"), "no run named 'nope'")
    data = corpus.load()
    (model,) = saved_run("nan", data.tokenizer.chars, corpus_sha=data.sha256)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    checkpoint.save("nan", model, on_disk("nan"), {"step": 0})
    result = invoke("eval", "nan", "--weights", "last")  # the best stays the finite weights of step 0
    assert result.exit_code == 1 and "loss nan" not in result.stdout
    assert result.stderr.startswith("Error: the loss is nan") and result.stderr.count("\n") == 1


def test_eval_says_which_corpus_it_scores_when_it_is_not_the_runs_text(cached, tmp_path):
    data = corpus.load()
    saved_run("o", data.tokenizer.chars, corpus_sha=data.sha256)
    other = tmp_path / "other.txt"
    other.write_text(data.text[::-1])  # the same characters, another text
    for _ in corpus.import_file(other, name="other"):
        pass
    result = invoke("eval", "o", "--corpus", "other")
    assert result.exit_code == 0 and "of corpus 'other'" in result.stdout
    assert result.stderr.startswith("Note: scoring on corpus 'other'") and "not the text run 'o'" in result.stderr
    (tmp_path / "few.txt").write_text("abc abc\n" * 50)
    for _ in corpus.import_file(tmp_path / "few.txt", name="few"):
        pass
    assert_one_line_error(invoke("eval", "o", "--corpus", "few"), "another vocabulary than corpus 'few'")
