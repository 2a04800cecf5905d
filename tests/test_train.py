"""``tinyshake train``: the lecture's exact numbers, resume, Ctrl-C, bad input, and both output styles."""

from __future__ import annotations

import math

import fcntl
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from conftest import TINYSHAKE, on_disk, subprocess_env
from tinyshake import checkpoint, corpus
from tinyshake.training import device, stages, train as core
from tinyshake.cli import app

TINY = dict(n_embd=16, n_layer=1, n_head=2, block_size=8, batch_size=4, eval_iters=2, device="cpu")
TINY_ARGS = ["--model", "mini"] + [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]
HEAD_STEP0 = "step 0: train loss 4.2000, val loss 4.2047"
TINY_TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer.\n" * 25


# -- helpers (test_checkpoint.py uses them too) ---------------------------------------


def train_cli(*args: str, code: int = 0) -> Result:
    """Run ``tinyshake train`` in-process (plain output); check the exit code and that no escape code leaked."""
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == code, result.output
    assert "\x1b" not in result.output
    assert "Traceback" not in result.output
    return result


def assert_one_line_error(result: Result, *words: str) -> str:
    """Exit code 2, exactly one ``Error:`` line on stderr containing ``words``, nothing on stdout."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in lines[0]
    return lines[0]


def snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the data home and its bytes, to show that a failed command changed nothing."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def eval_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("step ")]


def log_of(output: str) -> str:
    """The evaluation lines of ``output``, each with its newline: the part before the sample."""
    return "".join(line + "\n" for line in eval_lines(output))


def step_of(line: str) -> int:
    """The step of a line such as ``step 300: train loss 2.8110, val loss 2.8249``."""
    return int(line.split()[1].rstrip(":"))


def as_lecture_lines(rows: list[dict]) -> list[str]:
    """Metrics rows (from --metrics or config.json) written as the lecture prints them."""
    return [f"step {r['step']}: train loss {r['train']:.4f}, val loss {r['val']:.4f}" for r in rows]


def tiny_run(run: str, *extra: str) -> Result:
    """A few-second-or-less run of the tiny mini config, with a 30-character sample."""
    return train_cli(*TINY_ARGS, "--run", run, "--sample-chars", "30", *extra)


def import_tiny_corpus(tmp_path: Path) -> None:
    """A small custom corpus, imported the way a user would: ``tinyshake fetch --from tiny.txt --corpus tiny``."""
    source = tmp_path / "tiny.txt"
    source.write_text(TINY_TEXT, encoding="utf-8")
    result = CliRunner().invoke(app, ["fetch", "--from", str(source), "--corpus", "tiny"])
    assert result.exit_code == 0, result.output


def weights(run: str) -> dict[str, torch.Tensor]:
    return checkpoint.load(run).model.state_dict()


# -- the lecture's exact numbers -------------------------------------------------------


# The lecture notebook's bigram cell, as it printed: ten evaluations, then decode() of token 0 and 500 new tokens.
NOTEBOOK_BIGRAM_LOG = [
    "step 0: train loss 4.7305, val loss 4.7241",
    "step 300: train loss 2.8110, val loss 2.8249",
    "step 600: train loss 2.5434, val loss 2.5682",
    "step 900: train loss 2.4932, val loss 2.5088",
    "step 1200: train loss 2.4863, val loss 2.5035",
    "step 1500: train loss 2.4665, val loss 2.4921",
    "step 1800: train loss 2.4683, val loss 2.4936",
    "step 2100: train loss 2.4696, val loss 2.4846",
    "step 2400: train loss 2.4638, val loss 2.4879",
    "step 2700: train loss 2.4738, val loss 2.4911",
]
NOTEBOOK_BIGRAM_SAMPLE = (
    "\nMARI he avayokis erceller thour d, myono thishe me tord se by he me, Forder anen: at trselorinjulour t yoru "
    "thrd wo ththathy IUShe bavidelanoby man ond be jus as g e atot Meste hrle s, ppat t JLENCOLIUS:\nOppid tes d "
    "s o ged moer y pevehear soue maramapay fo t: bueyo malalyo!\nDuir.\nFl ke it I t l o'ddre d ondu s?\ncr, "
    "havetrathackes w.\nPUpee meshancun, hrendspouthoulouren whel's'sesoread pe, s whure our heredinsethes; "
    "sedsend r lo pamit,\nQUMIVIVIOfe m ne RDINid we tr ort; t:\nMINENXI l dintandore r"
)


@pytest.mark.parametrize("plain", [(), ("--plain",)], ids=["speed-layer", "plain"])
def test_bigram_prints_the_notebooks_log_and_sample_then_evaluates_its_final_weights(cached, tmp_path, plain):
    assert len(NOTEBOOK_BIGRAM_SAMPLE) == 501 and len(NOTEBOOK_BIGRAM_LOG) == 10
    metrics = tmp_path / "metrics.jsonl"
    result = train_cli("--model", "bigram", "--device", "cpu", "--metrics", str(metrics), *plain)  # the lecture: a CPU
    assert result.stdout == "\n".join(NOTEBOOK_BIGRAM_LOG) + "\n" + NOTEBOOK_BIGRAM_SAMPLE + "\n"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert as_lecture_lines(rows[:-1]) == NOTEBOOK_BIGRAM_LOG and "final" not in rows[0]
    final = rows[-1]  # beyond the lecture: its last evaluation was at step 2700, 300 steps before the end
    assert final["step"] == 3000 and final["final"] is True
    assert f"final weights after step 3000: train loss {final['train']:.4f}, val loss {final['val']:.4f}" in result.stderr
    record = on_disk("bigram")
    assert record["final"]["val"] == final["val"] and record["step"] == 3000
    assert as_lecture_lines(record["metrics"]) == NOTEBOOK_BIGRAM_LOG  # the lecture's evaluations alone


@pytest.mark.parametrize("plain", [(), ("--plain",)], ids=["speed-layer", "plain"])
def test_head_stage_step0_is_the_lectures(cached, plain):
    result = train_cli("--model", "head", "--device", "cpu", "--max-iters", "1", "--sample-chars", "0", *plain)
    assert result.stdout == HEAD_STEP0 + "\n"
    assert ("the lecture's code as written (--plain)" in result.stderr) == bool(plain)
    assert checkpoint.read_record("head").hyper["plain"] == bool(plain)


# -- output options ----------------------------------------------------------------------


def test_quiet_prints_only_the_sample_and_sample_chars_0_skips_it(cached):
    full = tiny_run("loud", "--max-iters", "12", "--eval-interval", "5")
    quiet = tiny_run("quiet", "--max-iters", "12", "--eval-interval", "5", "--quiet")
    log = log_of(full.stdout)
    assert [step_of(line) for line in eval_lines(full.stdout)] == [0, 5, 10, 11]
    assert full.stdout.startswith(log) and len(full.stdout) == len(log) + 1 + 30 + 1
    assert quiet.stdout == full.stdout[len(log):]  # the same sample, alone
    silent = tiny_run("silent", "--max-iters", "12", "--eval-interval", "5", "--sample-chars", "0")
    assert silent.stdout == log


def test_metrics_file_gets_one_json_line_per_evaluation_and_a_new_run_starts_it_afresh(cached, tmp_path):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("left over from before\n")
    result = tiny_run("m", "--max-iters", "12", "--eval-interval", "5", "--metrics", str(metrics))
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 5, 10, 11]
    assert as_lecture_lines(rows) == eval_lines(result.stdout)
    assert all(set(r) == {"step", "train", "val", "train_bpc", "val_bpc", "elapsed"} for r in rows)
    assert all(r["val_bpc"] == pytest.approx(r["val"] / math.log(2)) for r in rows)  # characters: loss / ln 2
    tiny_run("m", "--resume", "--max-iters", "16", "--metrics", str(metrics))
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [0, 5, 10, 11, 15]


LADDER = ["bigram", "head", "multihead", "ffwd", "blocks", "residual", "layernorm", "gpt", "mini"]
EVAL_LAST = {"residual", "layernorm", "gpt", "mini"}


@pytest.mark.parametrize("stage", LADDER)
def test_each_stage_evaluates_at_0_every_interval_and_from_residual_on_at_the_last_step(cached, stage):
    small = ["--n-embd", "16", "--n-head", "2", "--n-layer", "1"] if stage in ("gpt", "mini") else []
    result = train_cli("--model", stage, "--max-iters", "8", "--eval-interval", "3", "--eval-iters", "1",
                       "--batch-size", "2", "--block-size", "4", "--sample-chars", "0", *small)
    steps = [step_of(line) for line in eval_lines(result.stdout)]
    assert steps == ([0, 3, 6, 7] if stage in EVAL_LAST else [0, 3, 6])


def test_gpt_on_cpu_warns_with_an_estimate_and_proceeds_without_a_terminal(cached):
    result = train_cli("--model", "gpt", "--device", "cpu", "--max-iters", "1", "--eval-iters", "1",
                       "--block-size", "16", "--batch-size", "2", "--sample-chars", "0")
    assert re.search(r"^Warning: the gpt stage is slow on a CPU; this run needs roughly \d+ s here", result.stderr)
    assert re.search(r"\d+ s of it in evaluations of 1 batches per split \(a smaller --eval-iters", result.stderr)
    assert eval_lines(result.stdout) == result.stdout.splitlines()  # stdout stays the lecture's log


# -- resume --------------------------------------------------------------------------------


def interrupted_in_process(data: corpus.Corpus, at: int, how: str) -> None:
    """Train run ``part`` and stop it at step ``at``: with should_stop (interrupt), or right after the evaluation
    checkpoint of that step, as if the process had died there."""
    config = core.make_config("mini", data.tokenizer.vocab_size, run="part", max_iters=40, eval_interval=10, **TINY)
    step = [0]
    events = core.train(config, data, should_stop=lambda: how == "interrupt" and step[0] >= at)
    for event in events:
        if isinstance(event, core.Stepped):
            step[0] = event.step
        if isinstance(event, core.Interrupted) or (how == "evaluation" and isinstance(event, core.Saved)
                                                   and event.step == at):
            events.close()
            break
    assert checkpoint.read_record("part").step == at


@pytest.mark.parametrize("how, at", [("interrupt", 15), ("interrupt", 20), ("evaluation", 20)])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(cached, how, at):
    full = tiny_run("full", "--max-iters", "40", "--eval-interval", "10")
    interrupted_in_process(corpus.load(), at, how)
    resumed = train_cli("--run", "part", "--resume", "--sample-chars", "30")  # no other flags: its own settings
    shown = at + 1 if how == "evaluation" else at  # an evaluation checkpoint already holds its step's losses
    later = [line for line in eval_lines(full.stdout) if step_of(line) >= shown]
    assert later and len(later) < len(eval_lines(full.stdout))
    assert eval_lines(resumed.stdout) == later
    assert resumed.stdout.endswith(full.stdout[-32:])  # the same sample, drawn from the same random state
    ours, theirs = weights("part"), weights("full")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert as_lecture_lines(on_disk("part")["metrics"]) == eval_lines(full.stdout)


def test_resume_keeps_the_runs_settings_but_may_go_further(cached, home):
    tiny_run("r", "--max-iters", "4", "--eval-interval", "2")
    before = snapshot(home)
    assert_one_line_error(train_cli("--run", "r", "--resume", "--batch-size", "8", code=2),
                          "trained with batch_size 4", "--resume keeps")
    assert_one_line_error(train_cli("--run", "r", "--resume", "--model", "head", code=2), "trained with stage mini")
    assert snapshot(home) == before
    created = checkpoint.read_record("r").created
    more = tiny_run("r", "--resume", "--max-iters", "7", "--model", "mini", "--batch-size", "4")
    assert eval_lines(more.stdout)[-1].startswith("step 6:")
    record = on_disk("r")
    assert record["step"] == 7 and record["created"] == created and record["hyper"]["max_iters"] == 7


# -- Ctrl-C -------------------------------------------------------------------------------------


def test_sigint_saves_a_checkpoint_prints_how_to_resume_and_exits_130(cached, home):
    env = subprocess_env(home, OMP_NUM_THREADS="1")
    args = [TINYSHAKE, "train", *TINY_ARGS, "--run", "sig", "--max-iters", "100000", "--eval-interval", "50000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("step 0: "), first + proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Ctrl-C: stopping after this step" in err and "Traceback" not in err
    step = int(re.search(r"^Interrupted at step (\d+); checkpoint saved in ", out, re.M).group(1))
    hint = re.search(r"^Resume with: (tinyshake train .*)$", out, re.M).group(1)
    loaded = checkpoint.load("sig")
    assert loaded.record.step == step and loaded.config.n_embd == 16
    again = subprocess.run([TINYSHAKE, *shlex.split(hint)[1:], "--max-iters", str(step + 4), "--sample-chars", "5"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert eval_lines(again.stdout)[-1].startswith(f"step {step + 3}: ")  # mini evaluates at its last step
    assert checkpoint.read_record("sig").step == step + 4


# -- bad input ----------------------------------------------------------------------------------


BAD_INPUT = {
    "unknown-stage": (["--model", "nope"], ["unknown stage 'nope'", *stages.STAGES]),
    "batch-size-0": (["--batch-size", "0"], ["--batch-size must be positive"]),
    "n-embd-negative": (["--n-embd", "-1"], ["--n-embd must be positive"]),
    "block-size-0": (["--block-size", "0"], ["--block-size must be positive"]),
    "max-iters-negative": (["--max-iters", "-1"], ["--max-iters"]),
    "not-divisible": (["--n-embd", "30", "--n-head", "4"], ["--n-embd (30) must be divisible by --n-head (4)"]),
    "cuda-missing": (["--device", "cuda"], ["'cuda' is not available"]),
    "unknown-device": (["--device", "tpu"], ["unknown device 'tpu'"]),
    "resume-nothing": (["--run", "ghost", "--resume"], ["no run 'ghost' to resume"]),
    "bad-run-name": (["--run", "../up"], ["invalid run name"]),
    "metrics-folder-missing": (["--metrics", "/nonexistent/folder/m.jsonl"], ["cannot write metrics"]),
    "block-size-too-long": (["--corpus", "tiny", "--block-size", "215", "--batch-size", "1"],
                            ["--block-size (215) must be below the shortest split's length (215)"]),
}


@pytest.mark.parametrize("args, words", list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cached, home, tmp_path, monkeypatch, args, words):
    monkeypatch.setattr(device, "cuda_available", lambda: False)  # the same answer on a GPU machine
    import_tiny_corpus(tmp_path)
    before = snapshot(home)
    at_most_one_step = [] if "--max-iters" in args else ["--max-iters", "1"]  # should the check not fire
    assert_one_line_error(train_cli(*args, *at_most_one_step, code=2), *words)
    assert snapshot(home) == before


def test_an_existing_run_is_refused_and_overwrite_replaces_it(cached, home):
    tiny_run("same", "--max-iters", "3", "--eval-interval", "2")
    old = on_disk("same")
    before = snapshot(home)
    assert_one_line_error(train_cli(*TINY_ARGS, "--run", "same", code=2), "run 'same' already exists (step 3)",
                          "--resume", "--overwrite")
    assert_one_line_error(train_cli(*TINY_ARGS, "--run", "same", "--overwrite", "--batch-size", "0", code=2))
    assert snapshot(home) == before
    tiny_run("same", "--max-iters", "5", "--eval-interval", "2", "--overwrite")
    new = on_disk("same")
    assert new["step"] == 5 and new["files"] != old["files"]
    assert sorted(p.name for p in checkpoint.run_dir("same").iterdir()) == sorted(["config.json", *new["files"].values()])


# -- the Rich view on a terminal ---------------------------------------------------------------


def run_on_terminal(args: list[str], home: Path, typed: str = "", timeout: float = 120) -> tuple[int, str]:
    """Run the installed ``tinyshake`` on a 120x40 pseudo-terminal; return its exit code and everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = subprocess_env(home, TERM="xterm-256color", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([TINYSHAKE, *args], stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    os.write(master, typed.encode())
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def visible(drawn: str) -> str:
    """The text a terminal would show, escape codes removed."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn).replace("\r", "")


def test_rich_view_on_a_terminal_draws_table_progress_summary_then_sample(cached, home):
    args = [*TINY_ARGS, "--max-iters", "30", "--eval-interval", "10", "--sample-chars", "40"]
    plain = train_cli(*args, "--run", "plain")
    code, drawn = run_on_terminal(["train", *args, "--run", "tty"], home)
    text = visible(drawn)
    assert code == 0, text
    assert "\x1b[" in drawn  # it did render for a terminal
    assert "mini · run tty" in text and "━━━━" in text and "30/30" in text and "Training run tty: mini (" in text
    for line in eval_lines(plain.stdout):  # the table holds the same numbers as the plain log
        step, train, val = re.findall(r"[\d.]+", line)
        assert re.search(rf"│ +{step} │ {train} │ {val} │", text), line
    record = on_disk("tty")
    rows = [f"parameters  {record['parameters']:,}", "steps       30", "wall time", f"best val    {record['best_val']:.4f}",
            f"checkpoint  {checkpoint.run_dir('tty')}", "chat        tinyshake chat tty"]
    summary = [text.index(row, text.rindex("30/30")) for row in rows]
    assert summary == sorted(summary)
    sample = plain.stdout[len(log_of(plain.stdout)):]
    hint = text.rindex(f"Next on the ladder: tinyshake train --model {stages.next_stage('mini').name} (")
    assert text[:hint].endswith(sample)  # streamed whole, the same as without a terminal, before the hint


def test_gpt_on_cpu_asks_on_a_terminal_and_no_leaves_nothing(cached, home):
    before = snapshot(home)
    code, drawn = run_on_terminal(["train", "--model", "gpt", "--device", "cpu"], home, typed="n\n")
    text = visible(drawn)
    assert code == 1, text
    assert "Warning: the gpt stage is slow on a CPU" in text and " h here" in text and "Train it anyway?" in text
    assert snapshot(home) == before


def test_compile_that_cannot_work_falls_back_to_eager_with_one_notice(tmp_path, monkeypatch):
    """torch.compile fails lazily, at the first call: training must notice that, say so once and go on unchanged."""
    import_tiny_corpus(tmp_path)
    data = corpus.load("tiny")

    def broken_compile(model):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return call

    def final_weights(compile_model: bool, run: str) -> tuple[list[str], dict[str, torch.Tensor]]:
        config = core.with_vocab(core.make_config("mini", run=run, max_iters=6, eval_interval=3, compile=compile_model,
                                                  **TINY), data.tokenizer.vocab_size)
        events = list(core.train(config, data))
        notices = [n for e in events if isinstance(e, core.Started) for n in e.notices]
        model = [e for e in events if isinstance(e, core.Finished)][0].model
        return notices, {k: v.clone() for k, v in model.state_dict().items()}

    eager_notices, eager = final_weights(False, "eager")
    monkeypatch.setattr(torch, "compile", broken_compile)
    notices, fallback = final_weights(True, "fallback")
    assert eager_notices == [] and len(notices) == 1 and "torch.compile is unavailable" in notices[0]
    assert all(torch.equal(eager[k], fallback[k]) for k in eager)  # the probe left the random streams alone
