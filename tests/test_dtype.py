"""``--dtype auto``: bf16 autocast where the hardware multiplies bf16 natively, float32 elsewhere; modern's default."""

from __future__ import annotations

import pytest
import torch
from test_train import TINY, train_cli

from conftest import on_disk
from tinyshake import checkpoint
from tinyshake.training import machine, plan, stages
from tinyshake.training.plan import make_config, resolve_dtype

CPU = torch.device("cpu")


def flags(monkeypatch, *names: str) -> None:
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(("avx2", "fma", *names)))


@pytest.mark.parametrize("native, expected", [(("amx_bf16",), "bfloat16"), (("avx512_bf16",), "bfloat16"),
                                              ((), "float32"), (("avx512f",), "float32")])
def test_auto_on_a_cpu_follows_its_bf16_flags(monkeypatch, native, expected):
    flags(monkeypatch, *native)
    assert resolve_dtype(CPU, "auto", []) == expected
    assert resolve_dtype(CPU, "float32", []) == "float32"  # only auto looks at the flags


@pytest.mark.parametrize("bf16, expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_on_cuda_asks_the_device_and_mps_stays_float32(monkeypatch, bf16, expected):
    flags(monkeypatch, "amx_bf16")  # the CPU's flags say nothing about a GPU
    monkeypatch.setattr(plan, "_cuda_bf16", lambda: bf16)
    assert resolve_dtype(torch.device("cuda"), "auto", []) == expected
    assert resolve_dtype(torch.device("mps"), "auto", []) == "float32"


def test_modern_defaults_to_auto_and_the_lectures_stages_to_float32():
    modern = ("modern", *stages.SIZED)  # the modern recipe, at every size
    assert {make_config(name).dtype for name in modern} == {"auto"}
    assert {name: make_config(name).dtype for name in stages.STAGES if name not in modern} == \
        {name: "float32" for name in stages.STAGES if name not in modern}
    assert make_config("modern", dtype="float32").dtype == "float32"


@pytest.mark.parametrize("native, used", [(("amx_bf16",), "bfloat16"), ((), "float32")])
def test_a_run_records_the_dtype_it_used_and_resumes_as_auto(cached, monkeypatch, native, used):
    flags(monkeypatch, *native)
    tiny = [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    train_cli("--model", "modern", *tiny, "--max-iters", "2", "--sample-chars", "0")
    record = on_disk("modern")
    assert record["dtype"] == used and record["hyper"]["dtype"] == "auto"
