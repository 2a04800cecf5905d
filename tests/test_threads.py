"""The thread count comes from the free cores and the other tinyshake processes, not from the cores that exist."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from test_train import TINY_ARGS, assert_one_line_error, train_cli
from typer.testing import CliRunner

from tinyshake import checkpoint
from tinyshake.training import threads
from tinyshake.cli import app
from tinyshake.errors import UsageError


def test_a_quiet_machine_gets_every_core():
    choice = threads.choose(cpus=2, busy=0.1, peers=0, ceiling=2)
    assert choice.threads == 2 and not choice.busy


def test_busy_cores_and_other_runs_lower_the_count_and_say_why():
    by_load = threads.choose(cpus=2, busy=1.6, peers=0, ceiling=2)
    assert by_load.threads == 1 and by_load.busy and "1.6 of 2 cores" in by_load.notice()
    by_peer = threads.choose(cpus=4, busy=0.0, peers=1, ceiling=4)
    assert by_peer.threads == 2 and "1 other tinyshake process" in by_peer.reason
    assert threads.choose(cpus=8, busy=7.9, peers=3, ceiling=8).threads == 1  # never below one


def test_the_ceiling_is_kept():
    assert threads.choose(cpus=8, busy=0.0, peers=0, ceiling=1).threads == 1


def test_other_processes_are_counted_and_stale_entries_removed(home):
    threads.registry().mkdir(parents=True)
    (threads.registry() / str(os.getpid())).write_text("")  # this process: not counted
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (threads.registry() / str(live.pid)).write_text("")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (threads.registry() / dead.stdout.strip()).write_text("")
        assert threads.others() == 1
        assert not (threads.registry() / dead.stdout.strip()).exists()
    finally:
        live.kill()
        live.wait()


def test_the_wait_policy_is_set_before_torch_loads_and_threads_imports_no_torch():
    code = ("import os, sys; import tinyshake.training.threads; assert 'torch' not in sys.modules; "
            "print(os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'])")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["20000", "1"]


# -- the choice in a run: decided once by the plan, applied by train, looked at again at each evaluation ----------


def busy_machine(monkeypatch, cpus: int = 4, busy: float = 3.5) -> None:
    """A machine of ``cpus`` cores that other programs keep ``busy``, whatever this one really is."""
    monkeypatch.setattr(threads, "allowed_cpus", lambda: list(range(cpus)))
    monkeypatch.setattr(threads, "_ceiling", lambda: cpus)
    monkeypatch.setattr(threads, "busy_cores", lambda cpus_, seconds=threads.SAMPLE_SECONDS: busy)


def test_decide_takes_the_request_or_the_free_cores(monkeypatch):
    busy_machine(monkeypatch)
    assert threads.decide(None) == threads.Choice(1, "other programs use 3.5 of 4 cores", busy=True)
    assert threads.decide(3) == threads.Choice(3, "set by --threads", automatic=False)
    for bad in (0, -1, 5):
        with pytest.raises(UsageError, match="between 1 and the 4 CPUs"):
            threads.decide(bad)


def test_refresh_follows_the_machine_but_not_a_count_set_by_hand(monkeypatch):
    busy_machine(monkeypatch, busy=0.0)
    threads.configure(threads.decide(None))
    assert torch.get_num_threads() == 4
    busy_machine(monkeypatch, busy=2.0)
    assert threads.refresh() is None and torch.get_num_threads() == 4  # one look is not enough
    changed = threads.refresh()
    assert changed is not None and changed.threads == 2 and torch.get_num_threads() == 2
    assert threads.refresh() is None  # no change, no event
    for busy in (0.0, 2.0, 0.0, 2.0):  # a program that comes and goes at every look changes nothing
        busy_machine(monkeypatch, busy=busy)
        assert threads.refresh() is None and torch.get_num_threads() == 2
    threads.configure(threads.decide(3))
    busy_machine(monkeypatch, busy=0.0)
    assert threads.refresh() is None and torch.get_num_threads() == 3


@pytest.mark.parametrize("given", ["0", "100000", "-2"])
def test_threads_out_of_range_is_one_line_exit_2_before_anything_is_fetched(home, given):
    result = CliRunner().invoke(app, ["train", "--threads", given, "--max-iters", "1"])
    assert_one_line_error(result, "--threads must be between 1 and the")
    assert not (home / "corpus").exists()


def test_the_header_names_the_threads_and_the_record_keeps_them(cached):
    result = train_cli(*TINY_ARGS, "--threads", "1", "--max-iters", "2", "--sample-chars", "0")
    assert "on cpu, 1 thread (set by --threads)" in result.stderr
    assert checkpoint.read_record("mini").threads == 1


def test_a_busy_machine_says_so_in_one_line_and_a_change_between_evaluations_is_noted(cached, monkeypatch):
    busy_machine(monkeypatch)
    looks = iter([threads.Choice(3, "other programs use 0.8 of 4 cores", busy=True)])
    monkeypatch.setattr(threads, "refresh", lambda: next(looks, None))
    result = train_cli(*TINY_ARGS, "--max-iters", "4", "--eval-interval", "2", "--sample-chars", "0")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: the machine is busy")]
    assert notes == ["note: the machine is busy: other programs use 3.5 of 4 cores; using 1 thread, so steps may "
                     "be slower than on a quiet day"]
    assert "on cpu, 1 thread (other programs use 3.5 of 4 cores)" in result.stderr
    assert "note: after step 0: now 3 threads (other programs use 0.8 of 4 cores)" in result.stderr
    assert checkpoint.read_record("mini").threads == 3


def test_others_during_counts_other_programs_but_not_this_process(tmp_path, monkeypatch):
    """From /proc/stat's counters: this process's own CPU time is taken out, another program's is not."""
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads, "STAT", stat)

    def write(busy_per_cpu: int, idle_per_cpu: int) -> None:
        stat.write_text("".join(f"cpu{c} {busy_per_cpu} 0 0 {idle_per_cpu} 0 0 0 0\n" for c in (0, 1)))

    def measured(own_seconds: float) -> float | None:
        """One second in which both CPUs were busy throughout, ``own_seconds`` of it this process's."""
        clocks = {"process_time": iter([0.0, own_seconds]), "perf_counter": iter([0.0, 1.0])}
        monkeypatch.setattr(threads, "time", type("Clock", (), {
            name: staticmethod(lambda it=it: next(it)) for name, it in clocks.items()}))
        write(50, 50)
        return threads.others_during([0, 1], lambda: write(150, 50))  # 100 more busy jiffies on each CPU

    assert measured(own_seconds=0.0) == pytest.approx(2.0)  # both cores busy, none of it ours
    assert measured(own_seconds=1.5) == pytest.approx(0.5)  # 1.5 cores of it were this process's threads
    stat.unlink()
    monkeypatch.setattr(threads, "time", time)
    assert threads.others_during([0, 1], lambda: None) is None  # no /proc/stat: cannot tell
