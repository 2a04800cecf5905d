"""The lecture's models (tinyshake.models.model), plain and sped up, against a reference written as its code."""

from __future__ import annotations

import pytest
import torch

from typer.testing import CliRunner

from lecture_reference import RefModel, ref_estimate_loss
from tinyshake import corpus
from tinyshake.models import speed
from tinyshake.training import train
from tinyshake.cli import app
from tinyshake.models.model import ModelConfig, build

VOCAB = 65
SMALL_STAGES = ["head", "multihead", "ffwd", "blocks", "residual", "layernorm", "mini"]


def stage_config(stage: str) -> ModelConfig:
    return train.make_config(stage, VOCAB).model


def seeded_pair(config: ModelConfig, stage: str) -> tuple[torch.nn.Module, RefModel]:
    """Our model and the reference, each built right after ``torch.manual_seed(1337)``."""
    torch.manual_seed(1337)
    ours = build(config)
    torch.manual_seed(1337)
    ref = RefModel(stage, config.vocab_size, config.block_size, config.n_embd, config.n_head, config.n_layer,
                   config.dropout)
    return ours, ref


@pytest.mark.parametrize("stage", SMALL_STAGES + ["gpt", "gpt-video"])
def test_parameters_equal_the_lecture_code_in_order(stage: str) -> None:
    ours, ref = seeded_pair(stage_config(stage), stage)
    mine = list(ours.named_parameters())
    theirs = list(ref.named_parameters())
    assert [tuple(p.shape) for _, p in mine] == [tuple(p.shape) for _, p in theirs]
    for (name, p), (ref_name, q) in zip(mine, theirs):
        assert torch.equal(p, q), f"{name} differs from the reference's {ref_name}"
    # the random stream is left where the lecture's code leaves it, so training draws the same batches
    assert torch.equal(torch.rand(4), _reference_stream_after(stage))


def _reference_stream_after(stage: str) -> torch.Tensor:
    """The next random numbers after building the reference model from seed 1337."""
    config = stage_config(stage)
    torch.manual_seed(1337)
    RefModel(stage, VOCAB, config.block_size, config.n_embd, config.n_head, config.n_layer, config.dropout)
    return torch.rand(4)


@pytest.fixture
def splits(cached) -> dict[str, torch.Tensor]:
    data = corpus.load()
    return {"train": data.train, "val": data.val}


@pytest.mark.parametrize("fast", [True, False], ids=["speed-layer", "plain"])
@pytest.mark.parametrize("chunk_tokens", [1 << 30, 1000], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("stage", SMALL_STAGES)
def test_step0_losses_equal_the_lecture_estimate(stage, chunk_tokens, fast, splits, monkeypatch) -> None:
    monkeypatch.setattr(train, "EVAL_CHUNK_TOKENS", chunk_tokens)
    config = train.make_config(stage, VOCAB)
    ours, ref = seeded_pair(config.model, stage)
    if fast:
        speed.apply(ours)
    eval_iters = 40  # one chunk at the default size; with 1000-token chunks, several and a partial last one
    torch.manual_seed(1337)
    fast = train.estimate_loss(ours, splits, config.batch_size, config.block_size, eval_iters)
    torch.manual_seed(1337)
    slow = ref_estimate_loss(ref, splits["train"], splits["val"], config.batch_size, config.block_size, eval_iters)
    for split in ("train", "val"):
        assert f"{fast[split]:.4f}" == f"{slow[split]:.4f}"
        assert fast[split] == pytest.approx(slow[split], abs=1e-5)
    assert ours.training, "estimate_loss must put the model back in training mode"


# The gpt stage shrunk to a CPU's size; the video's code prints this line at these settings with seed 1337.
SHRUNK_GPT = dict(batch_size=16, block_size=32, n_embd=64, n_head=4, n_layer=4, learning_rate=1e-3)
VIDEO_STEP0 = "step 0: train loss 4.4116, val loss 4.4022"


def test_gpt_video_step0_is_the_videos_code_and_differs_from_the_repositorys(splits) -> None:
    config = train.make_config("gpt-video", VOCAB, **SHRUNK_GPT)
    assert config.model.dropout == 0.2 and config.model.init_std is None
    lines = {}
    for stage in ("gpt-video", "gpt"):  # the same settings with today's scaling and init must not print it
        torch.manual_seed(1337)
        ref = RefModel(stage, VOCAB, config.block_size, config.model.n_embd, config.model.n_head,
                       config.model.n_layer, config.model.dropout)
        losses = ref_estimate_loss(ref, splits["train"], splits["val"], config.batch_size, config.block_size, 200)
        lines[stage] = f"step 0: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
    assert lines["gpt-video"] == VIDEO_STEP0 and lines["gpt"] != VIDEO_STEP0
    args = ["train", "--model", "gpt-video", "--device", "cpu", "--batch-size", "16", "--block-size", "32",
            "--n-embd", "64", "--n-head", "4", "--n-layer", "4", "--lr", "1e-3", "--max-iters", "1",
            "--sample-chars", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == VIDEO_STEP0 + "\n"
