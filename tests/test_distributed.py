"""Data-parallel training: the helpers in one process, gradient averaging in two, and whole runs under torchrun.

The multi-process tests start real processes that talk over gloo on 127.0.0.1,
each bounded by a timeout after which it is killed. This file doubles as the
workers' script: ``python test_distributed.py grad|peer-death OUT`` runs one rank.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINYSHAKE, subprocess_env

from tinyshake import checkpoint
from tinyshake.training import distributed
from tinyshake.errors import TinyshakeError, UsageError
from tinyshake.models.model import ModelConfig, build

# The mini stage's kind of model, shrunk: every kind of parameter (attention, projection, wide
# feed-forward, LayerNorm, embeddings, lm_head), no dropout, so a step is deterministic.
SMALL = ModelConfig(vocab_size=65, block_size=8, n_embd=16, n_head=2, n_layer=1, ffwd="wide", proj=True,
                    residual=True, layernorm=True, dropout=0.0, init_std=0.02)
SEED = 1337
HALF = 4  # rows per rank; the single process takes 2 * HALF
WORKER_TIMEOUT = 180  # seconds before a stuck rank is killed (a normal one takes a few)
RUN_TIMEOUT = 400
TORCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID")

@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain process: none of torchrun's variables set."""
    for name in TORCH_ENV:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- one process


def test_dist_from_env_alone(alone):
    dist = distributed.Dist.from_env()
    assert dist == distributed.Dist(rank=0, world_size=1, local_rank=0)
    assert not dist.enabled and dist.is_main


def test_dist_from_env_under_torchrun():
    dist = distributed.Dist.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (dist.rank, dist.world_size, dist.local_rank) == (3, 4, 1)
    assert dist.enabled and not dist.is_main
    assert distributed.Dist.from_env({"RANK": "0", "WORLD_SIZE": "2"}).is_main


@pytest.mark.parametrize("env", [{"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "2", "WORLD_SIZE": "2"},
                                 {"WORLD_SIZE": "0"}, {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "-1"}])
def test_dist_from_env_rejects_nonsense(env):
    with pytest.raises(UsageError):
        distributed.Dist.from_env(env)


def test_backends():
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for("cuda") == "nccl"
    with pytest.raises(UsageError, match="cpu or cuda"):
        distributed.backend_for("mps")


def test_alone_every_helper_is_the_identity(alone):
    torch.manual_seed(SEED)
    model = build(SMALL)
    dist = distributed.init("cpu")
    assert dist == distributed.Dist()
    assert not torch.distributed.is_initialized()
    assert distributed.wrap(model, dist, torch.device("cpu")) is model
    assert distributed.device_for(dist, torch.device("cpu")) == torch.device("cpu")
    assert distributed.mean(2.5) == 2.5
    assert distributed.any_true(True) is True and distributed.any_true(False) is False
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    distributed.shutdown()  # nothing to leave: must not fail


def test_init_without_a_rendezvous_is_one_line(monkeypatch, alone):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TinyshakeError) as caught:
        distributed.init("cpu")
    assert "cannot join the distributed job as rank 0 of 2 (gloo)" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("argv, expected", [
    (["train", "--nproc", "2", "--run", "x"], ["train", "--run", "x"]),
    (["train", "--nproc=4", "-m", "mini"], ["train", "-m", "mini"]),
    (["train", "--run", "x", "--nproc", "2"], ["train", "--run", "x"]),
    (["train", "--nprocx", "1"], ["train", "--nprocx", "1"]),
    (["train", "--", "--nproc", "2"], ["train", "--", "--nproc", "2"]),
])
def test_strip_nproc(argv, expected):
    assert distributed.strip_nproc(argv) == expected


def test_torchrun_command_reaches_tinyshake_with_its_options():
    command = distributed.torchrun_command(3, ["train", "--nproc", "3", "--run", "r", "-m", "mini", "--resume"])
    assert command[:4] == distributed.python_module("torch.distributed.run")
    assert "--standalone" in command and "--nproc_per_node=3" in command
    from torch.distributed.run import get_args_parser

    args = get_args_parser().parse_args(command[4:])  # torchrun's own parser, as it will read them
    assert args.no_python and args.standalone and args.nproc_per_node == "3"
    assert [args.training_script, *args.training_script_args] == [
        *distributed.python_module("tinyshake"), "train", "--run", "r", "-m", "mini", "--resume"]


def test_check_launch_refuses_what_cannot_run(monkeypatch):
    monkeypatch.setattr(distributed, "usable_cpus", lambda: 4)
    distributed.check_launch(4, torch.device("cpu"))
    with pytest.raises(UsageError, match="--nproc 5 needs 5 CPUs; this process may use 4: give at most 4"):
        distributed.check_launch(5, torch.device("cpu"))
    with pytest.raises(UsageError, match="cpu or cuda"):
        distributed.check_launch(2, torch.device("mps"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    distributed.check_launch(1, torch.device("cuda"))
    with pytest.raises(UsageError, match="--nproc 2 needs 2 GPUs; this machine has 1"):
        distributed.check_launch(2, torch.device("cuda"))
    with pytest.raises(UsageError):
        distributed.check_launch(0, torch.device("cpu"))


def _fake_torchrun(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(distributed, "torchrun_command", lambda nproc, argv: [sys.executable, "-c", code])


def test_launch_returns_the_exit_code_and_failures_read_clearly(monkeypatch, home):
    _fake_torchrun(monkeypatch, "import sys; sys.exit(0)")
    assert distributed.launch(2, ["train"]) == 0
    _fake_torchrun(monkeypatch, "import sys; sys.exit(3)")
    assert distributed.launch(2, ["train"]) == 3
    with pytest.raises(distributed.WorkerFailed) as caught:
        distributed.check_exit(3, "nosuchrun")
    assert str(caught.value) == ("a training process died (torchrun exit code 3); the job was stopped and "
                                 "run 'nosuchrun' has no checkpoint yet")
    distributed.check_exit(0, "nosuchrun")
    distributed.check_exit(distributed.INTERRUPTED, "nosuchrun")
    with pytest.raises(UsageError):
        distributed.launch(0, ["train"])


def test_launch_hands_one_ctrl_c_to_torchrun(monkeypatch, tmp_path):
    """Ctrl-C reaches torchrun once (it passes it on to every worker once); more would orphan the workers."""
    ready, seen = tmp_path / "ready", tmp_path / "seen"
    _fake_torchrun(monkeypatch, textwrap.dedent(f"""
        import signal, sys, time
        from pathlib import Path
        count = 0
        def on_int(signum, frame):
            global count
            count += 1
        signal.signal(signal.SIGINT, on_int)
        Path({str(ready)!r}).touch()
        deadline = time.monotonic() + 20
        while count == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # room for a second signal to arrive, if one were passed on
        Path({str(seen)!r}).write_text(str(count))
        sys.exit(1)  # torchrun's code when its workers stopped on a signal
    """))

    def press_ctrl_c_twice() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)

    before = signal.getsignal(signal.SIGINT)
    presser = threading.Thread(target=press_ctrl_c_twice, daemon=True)
    presser.start()
    code = distributed.launch(2, ["train"])
    presser.join(5)
    assert code == distributed.INTERRUPTED
    assert seen.read_text() == "1"
    assert signal.getsignal(signal.SIGINT) is before


# --------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_ranks(mode: str, out: Path, world_size: int = 2) -> list[subprocess.CompletedProcess]:
    """Run this file as ``world_size`` ranks of one gloo job on 127.0.0.1; kill any still running at the timeout."""
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = {k: v for k, v in os.environ.items() if k not in TORCH_ENV}
        env.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        procs.append(subprocess.Popen([sys.executable, __file__, mode, str(out)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    deadline = time.monotonic() + WORKER_TIMEOUT
    try:
        for proc in procs:
            try:
                stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"rank {procs.index(proc)} did not finish within {WORKER_TIMEOUT} s")
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """2 * HALF windows of tokens, the same in every process."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randint(SMALL.vocab_size, (2 * HALF, SMALL.block_size), generator=generator)
    y = torch.randint(SMALL.vocab_size, (2 * HALF, SMALL.block_size), generator=generator)
    return x, y


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def _ddp_grads(dist: distributed.Dist) -> dict[str, torch.Tensor]:
    """This rank's gradients after a backward through DDP on its half of the batch."""
    torch.manual_seed(SEED + dist.rank)  # different weights per rank on purpose: wrap() must start all from rank 0's
    model = build(SMALL)
    ddp = distributed.wrap(model, dist, torch.device("cpu"))
    x, y = _fixed_batch()
    rows = slice(dist.rank * HALF, (dist.rank + 1) * HALF)
    _, loss = ddp(x[rows], y[rows])
    loss.backward()
    return _grads(model)


def _grad_worker(out: str) -> None:
    """One rank of the gradient test; the DDP wrapper is gone before the group is left, as in train()."""
    dist = distributed.init("cpu")
    grads = _ddp_grads(dist)
    if dist.is_main:
        torch.save(grads, out)
    distributed.shutdown()


def _peer_death_worker(out: str) -> None:
    """Rank 1 dies abruptly; rank 0 keeps averaging and must get one clear line, not a socket error."""
    dist = distributed.init("cpu")
    distributed.mean(1.0)  # both are up
    if dist.rank == 1:
        os._exit(9)
    try:
        with distributed.peer_failures(None):
            for _ in range(3000):
                distributed.mean(1.0)
                time.sleep(0.01)
        Path(out).write_text("no error")
    except distributed.WorkerFailed as exc:
        Path(out).write_text(f"WorkerFailed: {exc}")
    distributed.shutdown()  # as train() does on its way out: leaving the broken group must not crash


def test_two_ranks_average_to_the_full_batch_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    results = _run_ranks("grad", out)
    for rank, result in enumerate(results):
        assert result.returncode == 0, f"rank {rank} failed:\n{result.stderr[-3000:]}"
    averaged = torch.load(out, weights_only=True)

    torch.manual_seed(SEED)
    model = build(SMALL)
    x, y = _fixed_batch()
    _, loss = model(x, y)
    loss.backward()
    full = _grads(model)

    model.zero_grad()
    _, loss = model(x[:HALF], y[:HALF])
    loss.backward()
    half = _grads(model)

    assert averaged.keys() == full.keys()
    for name, grad in full.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(averaged[name], grad, rtol=0, atol=1e-6, msg=f"gradient of {name}")
    # rank 0's own half differs from the full batch's, so agreement above means the ranks averaged
    assert max((half[n] - full[n]).abs().max().item() for n in full) > 1e-3


def test_a_dead_rank_stops_the_others_with_one_line(tmp_path):
    out = tmp_path / "rank0.txt"
    results = _run_ranks("peer-death", out)
    assert results[1].returncode == 9
    assert results[0].returncode == 0, results[0].stderr[-3000:]
    message = out.read_text()
    assert message.startswith("WorkerFailed: another training process died, so this one stopped too; ")
    assert "\n" not in message


# --------------------------------------------------------------------------- whole runs under torchrun

# Loaded by every Python process of a run (PYTHONPATH): it logs which rank writes under runs/,
# and can make one rank die after a number of training batches.
HOOKS = '''
import os
import sys

_log, _runs = os.environ.get("TINYSHAKE_TEST_WRITES"), os.environ.get("TINYSHAKE_TEST_RUNS")
if _log and _runs:
    def _audit(event, args):
        if event == "os.rename":
            target = args[1]
        elif event == "open" and isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            target = args[0]
        else:
            return
        if isinstance(target, (str, os.PathLike)) and os.fspath(target).startswith(_runs):
            with open(_log, "a") as handle:
                handle.write(os.environ.get("RANK", "-") + " " + os.fspath(target) + "\\n")
    sys.addaudithook(_audit)

_die = os.environ.get("TINYSHAKE_TEST_DIE")  # "RANK:BATCHES"
if _die and os.environ.get("RANK") == _die.split(":")[0]:
    import tinyshake.training.train as _train
    _draw, _count = _train.get_batch, [0]
    def _get_batch(*args, **kwargs):
        _count[0] += 1
        if _count[0] > int(_die.split(":")[1]):
            os._exit(9)
        return _draw(*args, **kwargs)
    _train.get_batch = _get_batch
'''

TINY = ["--model", "mini", "--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--block-size", "8",
        "--batch-size", "8", "--eval-iters", "5", "--device", "cpu"]


def _run(tmp_path: Path, home: Path, args: list[str], **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``args`` with the hooks loaded; returns the result and the "RANK path" lines of files written in runs/."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(HOOKS)
    writes = tmp_path / "writes.log"
    writes.unlink(missing_ok=True)
    env = {k: v for k, v in subprocess_env(home, **extra).items() if k not in TORCH_ENV}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
               TINYSHAKE_TEST_WRITES=str(writes), TINYSHAKE_TEST_RUNS=str(home / "runs"))
    proc = subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers alike
        proc.communicate()
        pytest.fail(f"{' '.join(args[:8])} ... did not finish within {RUN_TIMEOUT} s")
    lines = writes.read_text().splitlines() if writes.exists() else []
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), lines


def _lecture_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("step ")]


def test_torchrun_two_ranks_train_and_rank0_alone_writes(tmp_path, home, cached):
    metrics = tmp_path / "metrics.jsonl"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "tinyshake", "train", *TINY, "--max-iters", "40", "--eval-interval", "10",
            "--sample-chars", "40", "--metrics", str(metrics)]
    result, writes = _run(tmp_path, home, args)
    assert result.returncode == 0, result.stderr[-4000:]

    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [0, 10, 20, 30, 39]
    shown = _lecture_lines(result.stdout)
    assert [int(line.split(":")[0].split()[1]) for line in shown] == steps  # printed once, by one rank
    losses = [json.loads(line)["val"] for line in metrics.read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.2, losses
    tail = result.stdout.split(shown[-1] + "\n", 1)[1]
    assert len(tail) == 1 + 40 + 1  # one sample: the context character, 40 sampled, a newline

    assert writes, "no checkpoint was written"
    assert {line.split(" ", 1)[0] for line in writes} == {"0"}, writes  # torchrun's workers are ranks 0 and 1
    record = checkpoint.read_record("mini")
    assert record.step == 40 and record.hyper["max_iters"] == 40
    state = checkpoint.load_state(record)
    assert len(state["rng_ranks"]) == 2  # each rank's stream, so a resume draws what it would have drawn
    checkpoint.load("mini")


def test_nproc_survives_a_dead_rank_and_resumes(tmp_path, home, cached):
    args = [sys.executable, "-m", "tinyshake", "train", *TINY, "--run", "r", "--max-iters", "30",
            "--eval-interval", "10", "--sample-chars", "0", "--nproc", "2"]
    # rank 1 dies while drawing its 16th batch: rank 0 has saved step 10 by then (saves come before its next step)
    result, writes = _run(tmp_path, home, args, TINYSHAKE_TEST_DIE="1:15")
    assert result.returncode == 1, result.stderr[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"Error: a training process died (torchrun exit code 1); the job was stopped and the last "
                    f"checkpoint in {home / 'runs' / 'r'} is intact (continue with --resume)")
    assert {line.split(" ", 1)[0] for line in writes} == {"0"}, writes
    record = checkpoint.read_record("r")
    assert record.step == 10
    checkpoint.load("r")
    checkpoint.load_state(record)  # hashes verified: nothing half-written

    result, writes = _run(tmp_path, home, [sys.executable, "-m", "tinyshake", "train", "--run", "r", "--resume",
                                           "--sample-chars", "0", "--nproc", "2"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert [line.split(":")[0] for line in _lecture_lines(result.stdout)] == ["step 20", "step 29"]
    record = checkpoint.read_record("r")
    assert record.step == 30
    vals = [m.val for m in record.metrics]
    assert [m.step for m in record.metrics] == [0, 10, 20, 29]
    assert vals[-1] < vals[0]
    assert {line.split(" ", 1)[0] for line in writes} == {"0"}, writes


if __name__ == "__main__":  # one rank of a two-process test (see _run_ranks)
    workers = {"grad": _grad_worker, "peer-death": _peer_death_worker}
    workers[sys.argv[1]](sys.argv[2])


def test_torchrun_two_ranks_train_on_bpe_tokens(tmp_path, home, cached):
    """Each rank learns the same BPE from the train split; rank 0 stores it, and the run reads back in it."""
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "tinyshake", "train", *TINY, "--tokenizer", "bpe", "--vocab-size", "100", "--max-iters", "10",
            "--eval-interval", "5", "--sample-chars", "30"]
    result, writes = _run(tmp_path, home, args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [line.split(":")[0] for line in _lecture_lines(result.stdout)] == ["step 0", "step 5", "step 9"]
    assert {line.split(" ", 1)[0] for line in writes} == {"0"}, writes
    stored = checkpoint.read_record("mini")
    assert stored.tokenizer == "bpe" and stored.step == 10 and len(checkpoint.load_state(stored)["rng_ranks"]) == 2
    assert checkpoint.load("mini").tokenizer.vocab_size == 100


def test_nproc_workers_import_the_installed_package_whatever_the_current_folder(tmp_path, home, cached):
    """Started in the folder that holds a clone (a folder named tinyshake), the workers used to import that folder."""
    decoy = tmp_path / "cwd"
    for package in ("tinyshake", "torch"):
        (decoy / package).mkdir(parents=True)
        (decoy / package / "__init__.py").write_text(f"raise SystemExit('imported the {package} folder of the cwd')\n")
    args = [TINYSHAKE, "train", *TINY, "--run", "c", "--max-iters", "4", "--eval-interval", "2", "--sample-chars", "0",
            "--nproc", "2"]
    env = {k: v for k, v in subprocess_env(home).items() if k not in TORCH_ENV}
    done = subprocess.run(args, env=env, cwd=decoy, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0 and "imported the" not in done.stderr, done.stderr[-3000:]
    assert checkpoint.read_record("c").step == 4


def test_nproc_beyond_the_cpus_is_one_line_before_anything_starts(home, cached):
    done = subprocess.run([TINYSHAKE, "train", *TINY, "--run", "n", "--nproc", "100000", "--device", "cpu"],
                          env=subprocess_env(home), capture_output=True, text=True, timeout=120)
    cpus = distributed.usable_cpus()
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"Error: --nproc 100000 needs 100000 CPUs; this process may use {cpus}: give at most {cpus}"]
    assert not (home / "runs" / "n").exists()
