"""The thread count comes from the free cores and the other tinyshake processes, not from the cores that exist."""

from __future__ import annotations

import os
import subprocess
import sys

from tinyshake import threads


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
    code = ("import os, sys; import tinyshake.threads; assert 'torch' not in sys.modules; "
            "print(os.environ['GOMP_SPINCOUNT'], os.environ['KMP_BLOCKTIME'])")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["20000", "1"]
