"""How many CPU threads to train with: as many as there are free cores, not as many as exist.

OpenMP threads wait for each other at every barrier. When another program
holds a core, the thread that should run there waits for the OS, and the
others wait for it: on a 2-core machine beside two busy processes a mini step
went from 17 ms to between 86 and 1,209 ms. One thread per FREE core avoids
that. So this module samples how much of the CPU other programs use (a short
look at ``/proc/stat``, or the load average where there is none), counts the
other tinyshake processes that are training or benchmarking (each registers
itself in a folder of the cache, so two runs started together share the cores
before either has shown up as load), and picks the count that fits. A long
run looks again at each evaluation (:func:`refresh`).

Imports no torch at module level: ``tinyshake info`` asks :func:`plan` too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tinyshake.store import paths
from tinyshake.errors import UsageError

SAMPLE_SECONDS = 0.15  # /proc/stat counts in 10 ms ticks: 15 per core, enough to tell busy from idle
REFRESH_SECONDS = 0.05  # a look during training, between two evaluations, costs less
SLACK = 0.3  # a core used up to 70% by others still counts as free: a thread loses less there than it gains
STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Choice:
    """The thread count and why: shown in the run's header and by ``tinyshake info``."""

    threads: int
    reason: str
    busy: bool = False  # fewer threads than the machine would give on a quiet day
    automatic: bool = True  # chosen from the machine (and looked at again by refresh), not set by --threads

    def count(self) -> str:
        return f"{self.threads} thread{'s' if self.threads != 1 else ''}"

    def describe(self) -> str:
        return f"{self.count()} ({self.reason})"

    def notice(self) -> str:
        """The one line ``train`` and ``bench`` print on a busy machine."""
        return f"the machine is busy: {self.reason}; using {self.count()}, so steps may be slower than on a quiet day"


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_ticks(cpus: list[int]) -> Optional[tuple[int, int]]:
    """(busy, total) jiffies of these CPUs since boot, from /proc/stat; None where it cannot be read."""
    try:
        lines = STAT.read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    busy = total = 0
    for line in lines:
        name, *values = line.split()
        if name in wanted:
            numbers = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(numbers)
            busy += sum(numbers) - numbers[3] - numbers[4]
    return (busy, total) if total else None


def busy_cores(cpus: list[int], seconds: float = SAMPLE_SECONDS) -> float:
    """Cores' worth of CPU that OTHER processes used over a short sample (this process's own use is taken out)."""
    busy = others_during(cpus, lambda: time.sleep(seconds))
    if busy is None:  # no /proc/stat (macOS, Windows): the load average, which counts this process too
        return max(0.0, os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    return busy


def others_during(cpus: list[int], run: Callable[[], object]) -> Optional[float]:
    """Cores' worth of CPU that other processes used while ``run()`` ran; None where /proc/stat cannot tell.

    This process's own CPU time (every thread of it, spinning ones included) is
    taken out, so a measurement that keeps both cores busy by itself reads as 0.
    """
    before, own_before, start = _cpu_ticks(cpus), time.process_time(), time.perf_counter()
    run()
    after, own, seconds = _cpu_ticks(cpus), time.process_time() - own_before, time.perf_counter() - start
    if before is None or after is None:
        return None
    if after[1] <= before[1]:
        return 0.0
    busy, total = after[0] - before[0], after[1] - before[1]
    per_core = total / len(cpus)  # jiffies one core had in the sample
    return min(float(len(cpus)), max(0.0, busy / per_core - own / max(seconds, 1e-9)))


# --------------------------------------------------------------------------- other tinyshake processes


def registry() -> Path:
    """One file per running tinyshake process that trains or benchmarks, named by its pid."""
    return paths.cache_root() / "procs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def others() -> int:
    """How many other tinyshake processes are training or benchmarking here (stale entries are removed)."""
    count = 0
    with contextlib.suppress(OSError):
        for entry in registry().iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            if _alive(int(entry.name)):
                count += 1
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
    return count


def register() -> None:
    """Say that this process trains here, until it exits; a folder that cannot be written just goes uncounted."""
    entry = registry() / str(os.getpid())
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.write_text("")
        atexit.register(lambda: entry.unlink(missing_ok=True))


# --------------------------------------------------------------------------- the choice


def choose(cpus: int, busy: float, peers: int, ceiling: int) -> Choice:
    """The thread count for ``cpus`` usable cores, ``busy`` of them in use by others, ``peers`` other tinyshake
    processes sharing them, and at most ``ceiling`` threads (torch's own count, or ``OMP_NUM_THREADS``)."""
    free = cpus - busy
    by_load = max(1, int(free + SLACK))
    by_share = max(1, cpus // (peers + 1))
    threads = max(1, min(ceiling, by_load, by_share))
    quiet = max(1, min(ceiling, cpus))
    if threads == quiet:
        why = f"{cpus} core{'s' if cpus != 1 else ''}, {free:.1f} free"
        if ceiling < cpus:
            why += f"; at most {ceiling} by OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else \
                f"; at most {ceiling} as set before"
        return Choice(threads, why)
    reasons = []
    if by_load == threads:
        reasons.append(f"other programs use {busy:.1f} of {cpus} cores")
    if by_share == threads:
        reasons.append(f"{peers} other tinyshake process{'es' if peers != 1 else ''} share{'' if peers != 1 else 's'} "
                       f"the {cpus} cores")
    return Choice(threads, " and ".join(reasons), busy=True)


def plan(sample: Optional[Callable[[list[int]], float]] = None, ceiling: Optional[int] = None) -> Choice:
    """The choice this machine calls for now, without applying it (``tinyshake info``); ``sample``: busy_cores."""
    cpus = allowed_cpus()
    if ceiling is None:
        ceiling = _ceiling()
    return choose(len(cpus), (sample or busy_cores)(cpus), others(), ceiling)


_state: dict[str, object] = {}  # the ceiling, whether this process's count is automatic, the count last called for


def _ceiling() -> int:
    """At most what torch would use by itself: its count when tinyshake first chose (honours OMP_NUM_THREADS)."""
    if "ceiling" not in _state:
        import torch
        _state["ceiling"] = torch.get_num_threads()
    return int(_state["ceiling"])  # type: ignore[call-overload]


def decide(requested: Optional[int] = None) -> Choice:
    """The thread count for a run, without applying it: ``requested`` (``--threads``) if given, else the free cores.

    ``requested`` must be between 1 and the CPUs this process may use: more
    threads than CPUs is the very oversubscription this module avoids.
    """
    if requested is None:
        return plan()
    cpus = len(allowed_cpus())
    if not 1 <= requested <= cpus:
        raise UsageError(f"--threads must be between 1 and the {cpus} CPU{'s' if cpus != 1 else ''} "
                         f"this process may use, got {requested}")
    return Choice(requested, "set by --threads", automatic=False)


def configure(choice: Choice) -> None:
    """Use ``choice`` in this process; it registers itself, so tinyshake processes started later share the cores."""
    import torch
    _ceiling()
    register()
    torch.set_num_threads(choice.threads)
    _state["automatic"] = choice.automatic
    _state["wanted"] = choice.threads


def refresh() -> Optional[Choice]:
    """Look at the machine again (at each evaluation of a long run) and change the count if it calls for another.

    A new count must be called for by two looks in a row: a program that comes
    and goes in bursts would otherwise flip the count (and print a note) at
    every evaluation. Returns the new choice when the count changed, else None;
    a count set by ``--threads``, or a process that never called
    :func:`configure`, is left alone.
    """
    if not _state.get("automatic"):
        return None
    import torch
    choice = plan(lambda cpus: busy_cores(cpus, REFRESH_SECONDS))
    wanted, _state["wanted"] = _state.get("wanted"), choice.threads
    if choice.threads == torch.get_num_threads() or wanted != choice.threads:
        return None
    torch.set_num_threads(choice.threads)
    return choice


__all__ = ["Choice", "allowed_cpus", "busy_cores", "choose", "configure", "decide", "others", "others_during",
           "plan", "refresh", "register"]
