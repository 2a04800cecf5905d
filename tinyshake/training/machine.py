"""What this CPU is, read from the operating system without importing torch.

The routes that are fastest depend on the CPU (its model, and whether it
multiplies bf16 natively), so the tuning cache is keyed by :func:`cpu_model`
and ``--dtype auto`` asks :func:`native_bf16`.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # the CPU multiplies bf16 in hardware: Sapphire Rapids, Zen 4 and later


@functools.lru_cache(maxsize=1)
def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    fields: dict[str, str] = {}
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_model() -> str:
    """The CPU's name, e.g. ``AMD EPYC`` or ``Intel(R) Xeon(R) Platinum 8480+``."""
    info = _cpuinfo_fields()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    family = info.get("cpu family")
    return f"{name} (family {family}, model {info.get('model')})" if family else name


def cpu_flags() -> frozenset[str]:
    """The instruction-set flags the kernel reports (empty where /proc/cpuinfo is missing)."""
    return frozenset(_cpuinfo_fields().get("flags", "").split())


def native_bf16(capability: str = "") -> bool:
    """Whether the CPU multiplies bf16 natively (AMX or AVX512-BF16), from its flags or torch's capability name."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS) or any(word in capability.upper() for word in ("AMX", "BF16"))
