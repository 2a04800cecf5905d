"""Muon, the warmup/warmdown schedule and the time budget: the modern preset's training pieces."""

from __future__ import annotations

import json

import pytest
import torch

from tinyshake import checkpoint, corpus
from tinyshake.models import model, modern, optim
from tinyshake.training import train
from tinyshake.models.model import count_parameters


def test_orthogonalize_brings_every_singular_value_near_one():
    torch.manual_seed(0)
    g = torch.randn(3, 48, 16) * torch.logspace(-0.5, 0.5, 16)  # stacked, tall, singular values spread 10x and more
    before, after = torch.linalg.svdvals(g), torch.linalg.svdvals(modern.orthogonalize(g))
    assert (before.max(-1).values / before.min(-1).values).min() > 10
    assert after.min() > 0.6 and after.max() < 1.2  # quintic Newton-Schulz: close to 1, not exactly 1


def test_muon_batches_matrices_of_one_shape_yet_orthogonalises_each_on_its_own():
    """Tall and wide matrices of one shape share a batch; each update is what a loop over the parameters gives."""
    torch.manual_seed(0)
    shapes = [(4, 3, 8, 16), (16, 16), (64, 16), (16, 64), (16, 64), (16, 16)]
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape)
    lr, momentum = 0.02, 0.95
    expected = []
    for p in params:  # one step from a zero momentum buffer: the Nesterov gradient is (1 + momentum) · grad
        matrices = (p.grad * (1 + momentum)).reshape(-1, *p.shape[-2:])
        rows, cols = matrices.shape[-2:]
        expected.append(p.detach() - lr * max(1.0, rows / cols) ** 0.5 * modern.orthogonalize(matrices).reshape(p.shape))
    modern.Muon(params, lr=lr, momentum=momentum).step()
    for p, want in zip(params, expected):
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("progress, factor", [(0.0, 0.0), (0.05, 0.5), (0.1, 1.0), (0.4, 1.0), (0.75, 0.5), (1.0, 0.0)])
def test_schedule_warms_up_holds_and_cools_down_to_zero_at_the_end(progress, factor):
    assert modern.lr_factor(progress, warmup=0.1, warmdown=0.5) == pytest.approx(factor)


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    config = model.ModelConfig(vocab_size=65, block_size=8, n_embd=16, n_head=2, n_layer=2, ffwd="wide", proj=True,
                               residual=True, layernorm=True)
    net = model.build(config)
    combined = optim.make(net, "muon", lr=3e-3, muon_lr=0.02)
    muon, adamw = combined.optimizers
    hidden = {id(p) for g in muon.param_groups for p in g["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in hidden}
    assert names == {n for n, p in net.named_parameters() if n.startswith("blocks.") and p.ndim >= 2}
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(net.parameters())) - len(names)
    combined.scale_lr(0.5)
    assert [g["lr"] for g in combined.param_groups] == [0.01, 1.5e-3]


def _modern(run: str, vocab_size: int, **settings) -> train.TrainConfig:
    return train.with_vocab(train.make_config("modern", run=run, n_embd=32, n_layer=1, batch_size=8, block_size=16,
                                              eval_iters=2, device="cpu", **settings), vocab_size)


def test_muon_lowers_the_loss(cached):
    """Counted in steps, not seconds, so a busy machine cannot fail it."""
    data = corpus.load()
    events = list(train.train(_modern("muon", data.tokenizer.vocab_size, max_iters=150, eval_interval=150), data))
    evals = [e for e in events if isinstance(e, train.Evaluated)]
    assert evals[-1].step == 149 and evals[-1].val < evals[0].val - 0.5
    record = json.loads((checkpoint.run_dir("muon") / "config.json").read_text())
    assert record["hyper"]["optimizer"] == "muon"


def test_a_time_budget_ends_the_run_after_its_seconds_of_training(cached):
    data = corpus.load()
    config = _modern("budget", data.tokenizer.vocab_size, max_iters=100_000_000, eval_interval=10_000_000,
                     time_budget=0.5)
    events = list(train.train(config, data))
    finished = events[-1]
    assert isinstance(finished, train.Finished) and 0 < finished.step < config.max_iters
    record = json.loads((checkpoint.run_dir("budget") / "config.json").read_text())
    assert record["train_seconds"] >= 0.5  # it trained its budget, and stopped long before max_iters


def test_flattened_adamw_trains_like_a_per_parameter_adamw(cached):
    """The lecture stages step one flat, fused AdamW: bit for bit a fused per-parameter AdamW after many steps,
    and within float rounding of the lecture's plain loop over parameters."""
    data = corpus.load()
    config = train.make_config("layernorm", data.tokenizer.vocab_size)

    def trained(make_optimizer) -> list[torch.Tensor]:
        torch.manual_seed(1337)
        net = model.build(config.model)
        opt = make_optimizer(net)
        for _ in range(40):
            xb, yb = train.get_batch(data.train, config.batch_size, config.block_size)
            _, loss = net(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    flat = trained(lambda net: optim.make(net, "adamw", config.learning_rate, 0.0))
    fused = trained(lambda net: torch.optim.AdamW(net.parameters(), lr=config.learning_rate, fused=True))
    plain = trained(lambda net: torch.optim.AdamW(net.parameters(), lr=config.learning_rate))
    assert len(flat) == len(fused) == len(plain) > 10
    assert all(torch.equal(a, b) for a, b in zip(flat, fused))
    assert max((a - b).abs().max().item() for a, b in zip(flat, plain)) < 1e-5


def test_a_loaded_optimizer_keeps_this_devices_kernel_choice():
    """A state saved by an unfused AdamW (an older run, another device) must not switch the fused one off."""
    net = model.build(train.make_config("layernorm", 65).model)
    unfused = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(count_parameters(net)))], lr=1e-3)
    opt = optim.make(net, "adamw", 1e-3, 0.0)
    opt.load_state_dict({"optimizers": [unfused.state_dict()]})
    assert [group["fused"] for group in opt.param_groups] == [True]
