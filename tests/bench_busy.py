"""Benchmark, not a test: a mini training step on a quiet machine, beside busy programs, beside another training.

    python tests/bench_busy.py                 # every scenario, tinyshake's choice against the old default
    python tests/bench_busy.py --steps 60      # more steps per measurement

Each measurement runs in a fresh process, since OpenMP reads its waiting policy
when torch loads. Two ways of running are compared in each scenario:

- ``tinyshake``: what ``train`` does now: the threads from the free cores and the
  other tinyshake processes (:mod:`tinyshake.training.threads`), a short OpenMP spin
  (``GOMP_SPINCOUNT=20000``), and the CPU routes measured for that thread count.
- ``old``: what it did before: every CPU as a thread, libgomp's default spin
  (``GOMP_SPINCOUNT=300000``), oneDNN layers and batched attention up to 128.

The scenarios: ``quiet`` (nothing started beside it), ``busy`` (two
``python -c "while True: pass"`` processes), and ``training`` (a second mini
training in the same way of running, started first). The machine may be shared:
the load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"tinyshake": {"GOMP_SPINCOUNT": "20000", "KMP_BLOCKTIME": "1"},
         "old": {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"}}
SCENARIOS = ("quiet", "busy", "training")
SPIN = [sys.executable, "-c", "while True: pass"]
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
TIME_CAP = 25.0  # seconds of timed steps per measurement: the old way beside busy programs can take 1 s a step


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def worker(mode: str, steps: int, forever: bool) -> None:
    """Train mini steps the way ``mode`` says and print the median ms per step over chunks of 5 steps."""
    import torch

    from tinyshake import corpus
    from tinyshake.models import onednn, optim, speed
    from tinyshake.training import threads, train, tuning

    if mode == "tinyshake":
        choice = threads.decide(None)
        threads.configure(choice)
        tuning.tune(choice.threads)
        how = choice.describe()
    else:
        onednn.use(True)
        speed.SMALL_ATTENTION = 128
        how = f"{torch.get_num_threads()} threads (every CPU)"
    data = corpus.load().train
    config = train.make_config("mini", 65)
    torch.manual_seed(1337)
    net = speed.build(config.model)
    opt = optim.make(net, "adamw", config.learning_rate, config.muon_lr)

    def step() -> None:
        xb, yb = train.get_batch(data, config.batch_size, config.block_size)
        _, loss = net(xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    chunks: list[float] = []
    began = time.perf_counter()
    while forever or (len(chunks) * 5 < steps and time.perf_counter() - began < TIME_CAP):
        start = time.perf_counter()
        for _ in range(5):
            step()
        chunks.append((time.perf_counter() - start) / 5)
    print(f"{statistics.median(chunks) * 1e3:.1f} {len(chunks) * 5} {how}", flush=True)


def run_worker(mode: str, steps: int, env: dict[str, str]) -> tuple[float, int, str]:
    out = subprocess.run([sys.executable, __file__, "--worker", mode, "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout.split(maxsplit=2)
    return float(out[0]), int(out[1]), out[2].strip()


def measure(mode: str, scenario: str, steps: int, home: str) -> tuple[float, int, str, str]:
    """One figure: ms/step of ``mode`` in ``scenario``, the steps it timed, how it ran, and the load meanwhile."""
    env = dict(os.environ, TINYSHAKE_HOME=home, **MODES[mode])
    env.pop("OMP_NUM_THREADS", None)
    beside: list[subprocess.Popen] = []
    try:
        if scenario == "busy":
            beside = [subprocess.Popen(SPIN) for _ in range(2)]
        elif scenario == "training":
            beside = [subprocess.Popen([sys.executable, __file__, "--worker", mode, "--forever"], env=env,
                                       stdout=subprocess.DEVNULL)]
        if beside:
            time.sleep(3.0)  # the other training has loaded torch and registered; the spinners show as load
        ms, timed, how = run_worker(mode, steps, env)
        return ms, timed, how, load()
    finally:
        for proc in beside:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--worker", choices=list(MODES))
    parser.add_argument("--forever", action="store_true")
    parser.add_argument("--corpus", type=Path, default=SHARED_CORPUS, help="tiny Shakespeare's input.txt")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.forever)
        return
    print(f"bench_busy: mini steps, {cpu_name()}, {os.cpu_count()} CPUs; "
          f"started at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()}")
    with tempfile.TemporaryDirectory() as home:
        os.environ["TINYSHAKE_HOME"] = home  # its own registry of processes and tuning cache
        from tinyshake import corpus
        for _ in corpus.import_file(args.corpus):
            pass
        quiet: dict[str, float] = {}
        for scenario in SCENARIOS:
            for mode in MODES:
                ms, timed, how, now = measure(mode, scenario, args.steps, home)
                quiet.setdefault(mode, ms)
                print(f"{scenario:9} {mode:10} {ms:8.1f} ms/step ({timed} steps; {ms / quiet[mode]:5.2f}x its quiet "
                      f"time; {how}; {now})", flush=True)


def cpu_name() -> str:
    from tinyshake.training import machine

    return machine.cpu_model()


if __name__ == "__main__":
    main()
