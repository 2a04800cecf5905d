"""Pick the device to compute on: ``auto`` prefers CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinyshake.errors import UsageError

CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve(requested: str = "auto") -> DeviceChoice:
    """Turn ``auto|cpu|cuda[:N]|mps`` into a device that exists here, or a one-line error."""
    requested = requested.lower()  # every choice is taken whatever its case
    kind, colon, index = requested.partition(":")
    if kind not in CHOICES:
        raise UsageError(f"unknown device {requested!r}; choose one of {', '.join(CHOICES)}")
    if colon and (kind == "auto" or not (index.isascii() and index.isdigit())):
        raise UsageError(f"invalid device {requested!r}: an index is a number, as in cuda:1")
    if kind == "auto":
        if cuda_available():
            return DeviceChoice(torch.device("cuda"), f"auto: CUDA is available ({torch.cuda.get_device_name(0)})")
        if mps_available():
            return DeviceChoice(torch.device("mps"), "auto: Apple MPS is available")
        return DeviceChoice(torch.device("cpu"), "auto: no CUDA or MPS device found")
    if kind == "cuda" and not cuda_available():
        raise UsageError("device 'cuda' is not available here (torch sees no CUDA GPU); use --device cpu")
    if kind == "mps" and not mps_available():
        raise UsageError("device 'mps' is not available here; use --device cpu")
    if kind == "cuda" and colon and int(index) >= torch.cuda.device_count():
        raise UsageError(f"device {requested!r} is not available here")
    if kind != "cuda" and colon and int(index) != 0:
        raise UsageError(f"device {requested!r} is not available here; {kind} has only index 0")
    return DeviceChoice(torch.device(requested), "requested")
