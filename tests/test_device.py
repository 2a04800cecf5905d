"""Device and precision selection, checked on a CPU by pretending the accelerators are there or not."""

from __future__ import annotations

import pytest
import torch

from tinyshake.training import device, plan
from tinyshake.errors import UsageError


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Set which accelerators this 'machine' has: machine(cuda=True, mps=False)."""

    def have(cuda: bool = False, mps: bool = False, gpus: int = 1) -> None:
        monkeypatch.setattr(device, "cuda_available", lambda: cuda)
        monkeypatch.setattr(device, "mps_available", lambda: mps)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)

    return have


@pytest.mark.parametrize(
    "cuda, mps, expected, reason",
    [(True, True, "cuda", "CUDA is available (Test GPU)"), (False, True, "mps", "Apple MPS"),
     (False, False, "cpu", "no CUDA or MPS")],
)
def test_auto_prefers_cuda_then_mps_then_cpu_and_says_why(machine, cuda, mps, expected, reason):
    machine(cuda=cuda, mps=mps)
    choice = device.resolve("auto")
    assert choice.device.type == expected and reason in choice.reason


@pytest.mark.parametrize("requested, message", [("cuda", "'cuda' is not available"), ("mps", "'mps' is not available"),
                                                ("tpu", "unknown device 'tpu'")])
def test_a_device_that_is_not_there_is_a_usage_error(machine, requested, message):
    machine(cuda=False, mps=False)
    with pytest.raises(UsageError, match=message):
        device.resolve(requested)


def test_cuda_index_must_exist(machine):
    machine(cuda=True, gpus=2)
    assert device.resolve("cuda:1").device == torch.device("cuda:1")
    with pytest.raises(UsageError, match="not available"):
        device.resolve("cuda:2")


@pytest.mark.parametrize("bad", ["cuda:x", "cpu:abc", "cpu:", "mps:-1", "auto:0", "cuda:١"])
def test_a_device_index_that_is_not_a_number_is_a_usage_error(machine, bad):
    machine(cuda=True, mps=True, gpus=2)
    with pytest.raises(UsageError, match=f"invalid device '{bad}'"):
        device.resolve(bad)


def test_cpu_and_mps_have_only_index_0(machine):
    machine(cuda=False, mps=True)
    assert device.resolve("cpu:0").device == torch.device("cpu:0")
    for bad in ("cpu:1", "mps:3"):
        with pytest.raises(UsageError, match="only index 0"):
            device.resolve(bad)


@pytest.mark.parametrize(
    "kind, asked, used, noticed",
    [("cuda", "bfloat16", "bfloat16", False), ("mps", "bfloat16", "float32", True), ("cpu", "float16", "bfloat16", True),
     ("cpu", "float32", "float32", False)],
)
def test_precision_falls_back_with_one_notice_where_unsupported(kind, asked, used, noticed):
    notices: list[str] = []
    assert plan.resolve_dtype(torch.device(kind), asked, notices) == used
    assert len(notices) == int(noticed)
