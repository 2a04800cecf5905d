"""Data-parallel training: one process per device, each with its own batches, gradients averaged.

The processes are started by ``torchrun`` (directly, or by ``tinyshake train
--nproc N``, which runs torchrun for the user). torchrun tells each process who
it is through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, and
``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous); everything here reads that,
so a plain ``tinyshake train`` with none of it set runs exactly as before: every
helper is then the identity and no process group is ever created.

Why the helpers exist:

* DistributedDataParallel averages the gradients, but everything else a rank
  decides on its own must be agreed on explicitly, or the ranks fall out of
  step and hang in the next collective: the evaluation losses (:func:`mean`),
  whether to stop after this step (:func:`any_true`, for Ctrl-C and the time
  budget), and the RNG states a checkpoint keeps (:func:`gather`).
* A dead rank must end the whole job rather than leave the others waiting
  forever. torchrun does that (it stops the remaining workers as soon as one
  fails); :func:`launch` turns its exit code into something a user can act on.

This module is core: no Rich, no Typer.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as tdist
import torch.nn as nn

from tinyshake import checkpoint
from tinyshake.errors import TinyshakeError, UsageError

BACKENDS = {"cpu": "gloo", "cuda": "nccl"}
INTERRUPTED = 130  # the exit code of a run stopped with Ctrl-C, as a shell reports SIGINT
# `python -m MODULE`, but without the current folder first on sys.path (what -P does from Python 3.11 on): started
# in the folder that holds a clone, `-m tinyshake` imported the clone's folder instead of the installed package.
RUN_INSTALLED = ("import runpy, sys; getattr(sys.flags, 'safe_path', False) or sys.path.pop(0); "
                 "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")


class WorkerFailed(TinyshakeError):
    """A training process of a distributed run died; the job was stopped."""


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a distributed job; a lone process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are other processes to keep in step with."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The one process that prints, shows progress, writes checkpoints and samples."""
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Dist":
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; unset means a lone process."""
        env = os.environ if environ is None else environ
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
            raw = env.get(name, "").strip()
            try:
                values[name] = int(raw) if raw else default
            except ValueError:
                raise UsageError(f"environment variable {name} must be an integer, got {raw!r}") from None
        rank, world_size, local_rank = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
        if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
            raise UsageError(f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world_size}, "
                             f"LOCAL_RANK={local_rank}")
        return cls(rank, world_size, local_rank)


def backend_for(device_type: str) -> str:
    """gloo for CPUs, nccl for CUDA GPUs; other devices cannot train data-parallel here."""
    try:
        return BACKENDS[device_type]
    except KeyError:
        raise UsageError(f"distributed training runs on cpu or cuda, not {device_type!r}; use --device cpu") from None


def active() -> bool:
    """True when a process group with more than one member is up in this process."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def init(device_type: str) -> Dist:
    """Join the job torchrun started, if any, and return this process's place in it.

    Idempotent: when the process group already exists (a caller or a test set it
    up), it is kept. On CUDA each process takes the GPU of its local rank before
    the group starts, so nccl's communicators land on the right device.
    """
    dist = Dist.from_env()
    if not dist.enabled or (tdist.is_available() and tdist.is_initialized()):
        return dist
    if not tdist.is_available():
        raise TinyshakeError("this PyTorch build has no torch.distributed; train with a single process")
    backend = backend_for(device_type)
    if backend == "nccl":
        torch.cuda.set_device(device_for(dist, torch.device("cuda")))
    try:
        tdist.init_process_group(backend, rank=dist.rank, world_size=dist.world_size)
    except Exception as exc:  # rendezvous and backend failures come as many exception types
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TinyshakeError(f"cannot join the distributed job as rank {dist.rank} of {dist.world_size} "
                             f"({backend}): {detail}") from None
    return dist


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """The device this rank computes on: its own GPU ``cuda:LOCAL_RANK`` under DDP, else ``device``."""
    if not dist.enabled or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if dist.local_rank >= count:
        raise UsageError(f"local rank {dist.local_rank} has no GPU: this machine has {count}; "
                         f"start at most {count} processes per node")
    return torch.device("cuda", dist.local_rank)


def wrap(model: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks, else ``model`` itself.

    DDP broadcasts rank 0's weights at construction, so every rank starts from
    the same model, and averages the gradients during ``backward``. Checkpoints
    must still save the unwrapped ``model``, whose parameter names carry no
    ``module.`` prefix.
    """
    if not dist.enabled:
        return model
    if device.type == "cuda":
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index], output_device=device.index)
    return nn.parallel.DistributedDataParallel(model)


def _collective_device() -> torch.device:
    """nccl reduces only CUDA tensors (on this rank's GPU); gloo reduces CPU tensors."""
    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean(value: float) -> float:
    """The average of ``value`` over all ranks, the same on every rank (``value`` itself when alone).

    Used for evaluation: each rank estimates the loss on its own random batches,
    so the mean is an estimate over ``world_size`` times as many batches.
    """
    if not active():
        return float(value)
    total = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    tdist.all_reduce(total, op=tdist.ReduceOp.SUM)
    return total.item() / tdist.get_world_size()


def any_true(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (``flag`` itself when alone).

    Whether to stop (Ctrl-C seen by one process, a time budget measured by each
    process's own clock) must be one decision, or one rank leaves the loop while
    the others wait for it in the next all-reduce.
    """
    if not active():
        return bool(flag)
    votes = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    tdist.all_reduce(votes, op=tdist.ReduceOp.MAX)
    return bool(votes.item())


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order, on every rank (``[obj]`` when alone).

    Used to keep each rank's RNG state in the checkpoint rank 0 writes, so a
    resumed run draws the batches it would have drawn without the interruption.
    """
    if not active():
        return [obj]
    out: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def is_peer_failure(exc: BaseException) -> bool:
    """True for the errors a collective raises on a surviving rank when another rank has died.

    nccl reports them as ``DistError`` subclasses; gloo as a plain RuntimeError
    that says the peer closed the connection.
    """
    dist_error = getattr(tdist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        needle in text for needle in ("Connection closed by peer", "Connection reset by peer", "remote worker"))


def _what_is_left(run: Optional[str]) -> str:
    """Where the run stands on disk: checkpoints are written atomically, so the last one is whole."""
    if run is None:
        return "the last checkpoint is intact (continue with --resume)"
    if not checkpoint.exists(run):
        return f"run {run!r} has no checkpoint yet"
    return f"the last checkpoint in {checkpoint.run_dir(run)} is intact (continue with --resume)"


@contextlib.contextmanager
def peer_failures(run: Optional[str] = None) -> Iterator[None]:
    """Turn "another rank died" inside the block into one clear :class:`WorkerFailed` line.

    Without it a surviving rank prints a backend traceback about a closed
    socket before torchrun stops it; the line says what happened and what is
    left of run ``run`` on disk.
    """
    try:
        yield
    except Exception as exc:
        if not (active() and is_peer_failure(exc)):
            raise
        raise WorkerFailed(f"another training process died, so this one stopped too; {_what_is_left(run)}") from None


def shutdown() -> None:
    """Leave the process group, if this process is in one, so the process exits cleanly.

    Garbage is collected first: a DistributedDataParallel wrapper sits in
    reference cycles and keeps the group alive, and a gloo group that is only
    freed during the interpreter's teardown can abort the process (SIGABRT,
    "terminate called without an active exception") after a run that succeeded.
    Callers drop their wrapper before calling this.
    """
    if tdist.is_available() and tdist.is_initialized():
        gc.collect()
        tdist.destroy_process_group()


# --------------------------------------------------------------------------- launching with --nproc


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, so the launched processes don't launch again.

    Everything after a bare ``--`` is left alone.
    """
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        if arg == "--nproc":
            i += 2
            continue
        if not arg.startswith("--nproc="):
            out.append(arg)
        i += 1
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command that runs ``python -m tinyshake <argv>`` in ``nproc`` processes on this machine.

    ``argv`` is the tinyshake command line after the program name (``train ...``).
    ``--standalone`` starts a local rendezvous on a free port, so nothing needs
    configuring; runs over several machines call torchrun themselves with its
    rendezvous flags. The ``--`` keeps torchrun's parser off tinyshake's
    options: it would reject ``--run`` as an ambiguous abbreviation of its own
    ``--run-path``. Both torchrun and the workers start through
    :func:`python_module`, so a folder named ``tinyshake`` (or ``torch``) in
    the current folder is never imported in place of the package.
    """
    return [*python_module("torch.distributed.run"), "--standalone", f"--nproc_per_node={nproc}", "--no-python",
            "--", *python_module("tinyshake"), *strip_nproc(argv)]


def python_module(module: str) -> list[str]:
    """The command that runs ``module`` as ``python -u -m`` would, importing installed packages whatever the cwd."""
    return [sys.executable, "-u", "-c", RUN_INSTALLED.format(module=module)]


def check_launch(nproc: int, device: torch.device) -> None:
    """Refuse, before any process starts, an ``--nproc`` that cannot run on ``device``.

    Caught here it is one line; caught by a worker it would be one rank's error
    inside torchrun's failure report.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be 1 or more, got {nproc}")
    backend_for(device.type)
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise UsageError(f"--nproc {nproc} needs {nproc} GPUs; this machine has {torch.cuda.device_count()}")
    cpus = usable_cpus()
    if device.type == "cpu" and nproc > cpus:
        raise UsageError(f"--nproc {nproc} needs {nproc} CPUs; this process may use {cpus}: give at most {cpus}")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else the machine's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``argv`` under torchrun in ``nproc`` processes and wait; returns torchrun's exit code.

    torchrun runs in its own session, so a Ctrl-C on the terminal reaches only
    this process, which hands the first one on to torchrun: torchrun passes it
    to every worker once, they finish their step together and rank 0 saves
    (a worker that does not stop within torchrun's grace period is killed).
    Further Ctrl-Cs are ignored here, because killing torchrun would orphan its
    workers. After a Ctrl-C the result is :data:`INTERRUPTED`, whatever
    torchrun reports, since its workers exit non-zero on purpose then.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be 1 or more, got {nproc}")
    signals: list[int] = []  # every signal received while torchrun runs
    forwarded = False
    process: Optional[subprocess.Popen[bytes]] = None

    def pass_on_first() -> None:
        nonlocal forwarded
        if signals and process is not None and not forwarded:
            forwarded = True
            with contextlib.suppress(OSError, ValueError):  # torchrun already gone; a signal this OS can't send
                process.send_signal(signals[0])

    def on_signal(signum: int, frame: Any) -> None:
        signals.append(signum)
        pass_on_first()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        process = subprocess.Popen(torchrun_command(nproc, argv), start_new_session=True)
        pass_on_first()  # a Ctrl-C that came while torchrun was being started
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return INTERRUPTED if signals and code != 0 else code


def failure_message(code: int, run: Optional[str] = None) -> str:
    """One line for a distributed run of ``run`` whose torchrun ended with exit code ``code``."""
    return f"a training process died (torchrun exit code {code}); the job was stopped and {_what_is_left(run)}"


def check_exit(code: int, run: Optional[str] = None) -> None:
    """Raise :class:`WorkerFailed` for a failed job (any non-zero code other than an interruption)."""
    if code not in (0, INTERRUPTED):
        raise WorkerFailed(failure_message(code, run))


__all__ = [
    "Dist",
    "WorkerFailed",
    "INTERRUPTED",
    "active",
    "any_true",
    "backend_for",
    "check_exit",
    "check_launch",
    "device_for",
    "failure_message",
    "gather",
    "init",
    "is_peer_failure",
    "launch",
    "mean",
    "peer_failures",
    "shutdown",
    "strip_nproc",
    "torchrun_command",
    "wrap",
]
