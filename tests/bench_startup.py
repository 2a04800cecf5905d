"""Benchmark, not a test: how fast ``tinyshake --help`` and ``--version`` answer, against importing torch.

    python tests/bench_startup.py          # 5 runs each, the median, with the load average

Issue #12's target: the CLI answers in at most a quarter of torch's import time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TINYSHAKE = str(Path(sys.executable).with_name("tinyshake"))
COMMANDS = {"tinyshake --help": [TINYSHAKE, "--help"], "tinyshake --version": [TINYSHAKE, "--version"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"]}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(runs: int = 5) -> None:
    medians = {}
    for name, command in COMMANDS.items():
        times = [seconds(command) for _ in range(runs)]
        medians[name] = statistics.median(times)
        print(f"{name}: median {medians[name]:.3f} s of {' '.join(f'{t:.2f}' for t in times)}; "
              "load %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    torch_s = medians["python -c 'import torch'"]
    for name in list(COMMANDS)[:2]:
        print(f"{name}: {medians[name] / torch_s:.2f} of torch's import time")


if __name__ == "__main__":
    main()
