"""``tinyshake inspect`` and its core: what a trained model's numbers are, checked against plain recomputations."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from rich.style import Style
from typer.testing import CliRunner, Result

from conftest import on_disk, subprocess_env
from tinyshake import checkpoint, inspection
from tinyshake.models import speed
from tinyshake.cli import _render, app
from tinyshake.errors import UsageError
from tinyshake.tokens import CharTokenizer
from tinyshake.models.model import ModelConfig, build

VOCAB = CharTokenizer(list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))  # tiny Shakespeare's


def tiny(**model: object) -> torch.nn.Module:
    """A small random model over the 65 characters (seeded, so every test sees the same one)."""
    torch.manual_seed(3)
    settings = dict(vocab_size=VOCAB.vocab_size, block_size=8, n_embd=16, n_head=2, n_layer=2)
    settings.update(model)
    return build(ModelConfig(**settings))


@pytest.mark.parametrize("arch", ["bigram", "gpt"])
def test_next_distribution_is_the_softmax_of_the_last_logits(arch: str) -> None:
    model = tiny(arch=arch)
    prompt = "To be, or not to be"  # longer than the block: only its last 8 characters count
    dist = inspection.next_distribution(model, VOCAB, prompt)
    with torch.no_grad():
        logits, _ = model(torch.tensor([VOCAB.encode(prompt[-8:])]))
    expected = torch.softmax(logits[0, -1], dim=-1)
    assert sorted(c for c, _ in dist) == sorted(VOCAB.chars)
    assert [p for _, p in dist] == sorted((p for _, p in dist), reverse=True)
    for char, p in dist:
        assert p == pytest.approx(float(expected[VOCAB.stoi[char]]), abs=1e-6)
    assert sum(p for _, p in dist) == pytest.approx(1.0, abs=1e-5)


def test_an_empty_prompt_asks_for_the_first_character_after_the_start_token() -> None:
    model = tiny()
    assert inspection.next_distribution(model, VOCAB, "") == inspection.next_distribution(model, VOCAB, "\n")


def test_entropy_in_bits() -> None:
    assert inspection.entropy_bits([1.0, 0.0]) == 0.0
    assert inspection.entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert inspection.entropy_bits([("a", 1 / 65)] * 65) == pytest.approx(math.log2(65))


# -- attention: the captured weights against a plain per-head recomputation from the saved weights ----------


EVALUATED = [{"step": 1, "train": 2.0, "val": 2.0}]  # one evaluation, at step 1


def save_run(name: str, model: torch.nn.Module, stage: str = "test", step: int = 1, best: bool = False,
             metrics: list[dict[str, float]] | None = None) -> None:
    """Store ``model`` as a trained run, as training would (a record, weights, a training state)."""
    record = {"name": name, "stage": stage, "model": model.config.to_dict(), "hyper": {}, "vocab": VOCAB.chars,
              "corpus": {"name": "tinyshakespeare", "sha256": "0" * 64}, "step": step, "metrics": metrics or [],
              "best_val": 2.0 if metrics else None}
    state = {"step": step, "optimizer": {}, "rng": checkpoint.rng_state()}
    checkpoint.save(name, model, record, state, best=best)


def saved_weights(name: str) -> dict[str, torch.Tensor]:
    record = on_disk(name)
    return safetensors.torch.load_file(checkpoint.run_dir(name) / record["files"]["weights"])


def norm(x: torch.Tensor, w: dict[str, torch.Tensor], key: str, config: ModelConfig) -> torch.Tensor:
    if not config.layernorm:
        return x
    if config.norm == "rmsnorm":
        return x / (x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps).sqrt() * w[f"{key}.weight"]
    mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + 1e-5).sqrt() * w[f"{key}.weight"] + w[f"{key}.bias"]


def rotate(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary positions for one head (T, hs): channel i and i + hs/2 turn by position * base^(-i / (hs/2))."""
    half = x.shape[-1] // 2
    angle = torch.arange(x.shape[0])[:, None].float() * base ** (-torch.arange(half).float() / half)
    a, b = x[:, :half], x[:, half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


def plain_attention(w: dict[str, torch.Tensor], config: ModelConfig, ids: list[int]) -> list[list[torch.Tensor]]:
    """The weights of every layer and head, head by head, written out from the state dict."""
    T, hs = len(ids), config.head_size
    x = w["token_embedding_table.weight"][ids]
    if config.pos == "learned":
        x = x + w["position_embedding_table.weight"][:T]
    future = torch.ones(T, T).triu(1).bool()
    result = []
    for layer in range(config.n_layer):
        p = f"blocks.{layer}."
        h = norm(x, w, p + "ln1", config)
        heads, outputs = [], []
        for head in range(config.n_head):
            wk, wq, wv = (w[f"{p}sa.heads.{head}.{kind}.weight"] for kind in ("key", "query", "value"))
            k, q, v = h @ wk.T, h @ wq.T, h @ wv.T
            if config.qk_norm:
                q = q / (q.square().mean(-1, keepdim=True) + torch.finfo(q.dtype).eps).sqrt()
                k = k / (k.square().mean(-1, keepdim=True) + torch.finfo(k.dtype).eps).sqrt()
            if config.pos == "rope":
                q, k = rotate(q, config.rope_base), rotate(k, config.rope_base)
            wei = (q @ k.T / math.sqrt(hs)).masked_fill(future, float("-inf")).softmax(-1)
            heads.append(wei)
            outputs.append(wei @ v)
        result.append(heads)
        a = torch.cat(outputs, dim=-1)
        if config.proj:
            a = a @ w[p + "sa.proj.weight"].T + w[p + "sa.proj.bias"]
        x = x + a if config.residual else a
        if config.ffwd != "none":
            f = norm(x, w, p + "ln2", config) @ w[p + "ffwd.net.0.weight"].T + w[p + "ffwd.net.0.bias"]
            f = f.relu().square() if config.activation == "relu2" else f.relu()
            if config.ffwd == "wide":
                f = f @ w[p + "ffwd.net.2.weight"].T + w[p + "ffwd.net.2.bias"]
            x = x + f if config.residual else f
    return result


LADDER = {
    "multihead": dict(n_layer=1),
    "blocks": dict(n_layer=2, ffwd="simple"),
    "layernorm": dict(ffwd="wide", proj=True, residual=True, layernorm=True),
    "modern": dict(ffwd="wide", proj=True, residual=True, layernorm=True, norm="rmsnorm", activation="relu2",
                   qk_norm=True, pos="rope", init_std=0.2),
}


@pytest.mark.parametrize("stage", list(LADDER))
def test_attention_maps_equal_a_plain_recomputation_from_the_saved_weights(stage: str) -> None:
    save_run("r", tiny(**LADDER[stage]))
    loaded = checkpoint.load("r")
    prompt = "Now is the winter of our discontent"
    maps = inspection.attention_maps(loaded.model, loaded.tokenizer, prompt)
    ids = VOCAB.encode(prompt)[-8:]
    assert maps.tokens == list(prompt[-8:])
    expected = plain_attention(saved_weights("r"), loaded.config, ids)
    assert maps.weights.shape == (loaded.config.n_layer, 2, 8, 8)
    for layer, heads in enumerate(expected):
        for head, wei in enumerate(heads):
            assert torch.allclose(maps.weights[layer, head], wei, atol=1e-5), (layer, head)
    assert torch.allclose(maps.weights.sum(-1), torch.ones(loaded.config.n_layer, 2, 8), atol=1e-5)
    assert bool((maps.weights.triu(1) == 0).all())
    assert not bool((maps.weights.tril(-1) == 0).all())  # the weights below the diagonal are really there


@pytest.mark.parametrize("fast", [True, False], ids=["speed-layer", "plain"])
def test_attention_leaves_the_model_as_it_was(fast: bool) -> None:
    model = speed.apply(tiny()) if fast else tiny()
    model.train()
    maps = inspection.attention_maps(model, VOCAB, "abc")
    assert model.training and all(getattr(block.sa, "captured", None) is None for block in model.blocks)
    assert speed.is_applied(model) == fast  # a plain model is read through a sped-up copy of itself
    torch.testing.assert_close(maps.weights, inspection.attention_maps(speed.apply(tiny()), VOCAB, "abc").weights)
    x = torch.tensor([VOCAB.encode("abc")])
    assert torch.equal(model(x)[0], model(x)[0])


def test_a_bigram_has_no_attention() -> None:
    with pytest.raises(inspection.NoAttention, match="bigram"):
        inspection.attention_maps(tiny(arch="bigram"), VOCAB, "abc")


# -- embeddings ----------------------------------------------------------------------------------------


def independent_pca(table: torch.Tensor) -> torch.Tensor:
    """Two principal components by an eigendecomposition of the covariance (not an SVD), signs fixed the same way."""
    data = table.double().numpy()
    centred = data - data.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    points = centred @ vectors[:, np.argsort(values)[::-1][:2]]
    for axis in range(2):
        points[:, axis] *= np.sign(points[np.abs(points[:, axis]).argmax(), axis])
    return torch.from_numpy(points).float()


def test_embedding_projection_is_pca_with_fixed_signs() -> None:
    model = tiny(n_embd=32)
    table = inspection.embedding_table(model)
    projection = inspection.project(table, VOCAB.chars)
    assert torch.allclose(projection.points, independent_pca(table), atol=1e-4)
    mirrored = inspection.project(-table, VOCAB.chars)  # the same cloud through the origin: the same picture
    assert torch.allclose(mirrored.points, projection.points, atol=1e-5)
    assert torch.equal(inspection.project(table, VOCAB.chars).points, projection.points)
    assert 0 < projection.explained[1] <= projection.explained[0] < 1


def test_nearest_neighbours_by_cosine_similarity() -> None:
    table = torch.zeros(4, 2)
    table[0], table[1], table[2], table[3] = torch.tensor([1.0, 0]), torch.tensor([2.0, 0.1]), \
        torch.tensor([0, 1.0]), torch.tensor([-1.0, 0])
    found = inspection.nearest(table, list("abcd"), "a", count=3)
    assert [c for c, _ in found] == ["b", "c", "d"]
    assert found[0][1] == pytest.approx(2 / math.sqrt(4.01)) and found[2][1] == pytest.approx(-1.0)
    with pytest.raises(UsageError, match="not in the vocabulary"):
        inspection.nearest(table, list("abcd"), "z")


# -- the commands -----------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str) -> Result:
    result = runner.invoke(app, ["inspect", *args])
    assert "\x1b" not in result.output
    return result


def test_inspect_attention_json_is_every_layer_and_head_of_the_latest_run() -> None:
    save_run("a-old", tiny(arch="bigram"))
    save_run("b-new", tiny(**LADDER["layernorm"]))  # the most recent (or, in the same second, last by name)
    result = invoke("attention", "--prompt", "O Romeo,\\nRomeo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"run", "weights", "tokens", "attention"}
    assert data["run"] == "b-new" and data["weights"] in ("best", "last")
    assert data["tokens"] == list("o,\nRomeo")  # the last block_size (8) characters, with the newline
    loaded = checkpoint.load("b-new")
    expected = inspection.attention_maps(loaded.model, loaded.tokenizer, "O Romeo,\nRomeo").weights
    assert torch.allclose(torch.tensor(data["attention"]), expected, atol=1e-6)


def test_inspect_attention_draws_labelled_heatmaps_and_picks_layers_and_heads() -> None:
    save_run("r", tiny(**LADDER["layernorm"]))
    out = invoke("attention", "r", "--prompt", "to be or", "--all-heads").stdout
    assert all(f"layer {layer} \u00b7 head {head}" in out for layer in range(2) for head in range(2))
    assert "  t o \u00b7 b e \u00b7 o r" in out  # the keys, spaces shown as dots
    maps = inspection.attention_maps(checkpoint.load("r").model, VOCAB, "to be or")
    single = [line.rstrip() for line in invoke("attention", "r", "--prompt", "to be or", "--layer", "1",
                                                "--head", "0").stdout.splitlines()]
    rows = single[single.index("layer 1 \u00b7 head 0") + 2:][:8]
    for query, (label, row) in enumerate(zip("to\u00b7be\u00b7or", rows)):
        cells = "".join(_render.shade(float(w)) * 2 for w in maps.weights[1, 0, query, : query + 1])
        assert row == f"{label} {cells}".rstrip()  # nothing drawn above the diagonal
    one = invoke("attention", "r", "--prompt", "to be or", "--layer", "1", "--head", "mean").stdout
    assert "layer 1 \u00b7 mean of 2 heads" in one and "layer 0" not in one and "head 0" not in one
    assert invoke("attention", "r", "--prompt", "to be or", "--head", "1").stdout.count("head 1") == 2


def test_inspect_attention_shows_one_mean_map_per_layer_unless_asked_for_the_heads() -> None:
    save_run("r", tiny(**LADDER["layernorm"]))
    out = invoke("attention", "r", "--prompt", "to be or").stdout
    assert re.findall(r"layer \d \u00b7 (?:head \d|mean of \d heads)", out) == ["layer 0 \u00b7 mean of 2 heads",
                                                            "layer 1 \u00b7 mean of 2 heads"]
    both = invoke("attention", "r", "--all-heads", "--head", "0")
    assert both.exit_code == 2 and "--all-heads" in both.stderr and both.stderr.count("\n") == 1


def test_the_mean_of_a_single_head_is_named_as_that_head() -> None:
    save_run("r", tiny(n_head=1, n_layer=1))
    out = invoke("attention", "r", "--prompt", "to be or").stdout
    assert "layer 0 \u00b7 head 0" in out and "mean" not in out


def test_a_long_prompt_shows_its_last_part(monkeypatch: pytest.MonkeyPatch) -> None:
    save_run("r", tiny(block_size=32, n_layer=1))
    monkeypatch.setenv("COLUMNS", "24")  # room for 10 keys
    out = invoke("attention", "r", "--prompt", "abcdefghijklmnopqrstuvwxyz0123456789".replace("0123456789", "ABCDEFGHIJ"),
                 "--head", "0").stdout
    assert "the model sees only the last 32 characters" in out and "showing the last 10 positions" in out
    assert "  A B C D E F G H I J" in out and "\nz " not in out


@pytest.mark.parametrize("args, message", [
    (["--layer", "2"], "--layer must be between 0 and 1"),
    (["--head", "7"], "--head must be between 0 and 1"),
    (["--head", "most"], "--head must be a head's number or `mean`"),
    (["--prompt", "caf\u00e9"], "not in the vocabulary"),
    (["--json", "--layer", "0"], "--json prints every layer and head"),
])
def test_inspect_attention_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    save_run("r", tiny())
    result = invoke("attention", "r", *args)
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_inspect_without_runs_says_how_to_train_one() -> None:
    result = invoke("next")
    assert result.exit_code == 2 and "tinyshake train" in result.stderr


def test_inspect_next_json_and_bars() -> None:
    save_run("b", tiny(arch="bigram"))
    loaded = checkpoint.load("b")
    data = json.loads(invoke("next", "b", "--prompt", "Th", "--json").stdout)
    assert set(data) == {"run", "weights", "tokens", "next", "entropy_bits"} and data["tokens"] == ["T", "h"]
    with torch.no_grad():
        expected = loaded.model(torch.tensor([VOCAB.encode("Th")]))[0][0, -1].softmax(-1)
    assert len(data["next"]) == 65
    assert [row["p"] for row in data["next"]] == sorted(expected.tolist(), reverse=True)
    assert [row["char"] for row in data["next"]][0] == VOCAB.chars[int(expected.argmax())]
    assert data["entropy_bits"] == pytest.approx(-(expected * expected.log2()).sum().item(), abs=1e-5)
    assert len(json.loads(invoke("next", "b", "--prompt", "Th", "--json", "--top-k", "3").stdout)["next"]) == 3
    out = invoke("next", "b", "--prompt", "Th", "--top-k", "4").stdout
    top = data["next"][0]
    assert f"  {_render.visible(top['char'])} {top['p']:.4f} {'#' * round(top['p'] * 40)}".rstrip() in out
    assert "the other 61 characters" in out and f"entropy {data['entropy_bits']:.2f} bits" in out


def test_inspect_embeddings_scatter_neighbours_and_the_bigram_table() -> None:
    save_run("g", tiny(n_embd=32))
    out = invoke("embeddings", "g").stdout
    assert "principal components" in out
    assert sum(out.count(c) for c in "AZaez") >= 5
    data = json.loads(invoke("embeddings", "g", "--char", "e", "--json").stdout)
    table = inspection.embedding_table(checkpoint.load("g").model)
    assert torch.allclose(torch.tensor(data["points"]), independent_pca(table), atol=1e-4)
    assert [n["char"] for n in data["neighbours"]] == [c for c, _ in inspection.nearest(table, VOCAB.chars, "e")]
    assert "nearest e's" in invoke("embeddings", "g", "--char", "e").stdout
    save_run("b", tiny(arch="bigram"))
    bigram = invoke("embeddings", "b").stdout.splitlines()
    assert bigram[1] == "  \u23ce\u00b7!$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    assert len(bigram) >= 2 + 65 and all(len(line) == 67 for line in bigram[2:67])
    probs = json.loads(invoke("embeddings", "b", "--json").stdout)["next_probabilities"]
    assert torch.allclose(torch.tensor(probs).sum(-1), torch.ones(65), atol=1e-4)


def test_installed_entry_point_bigram_attention_is_one_line_exit_2(home: Path) -> None:
    save_run("b", tiny(arch="bigram"))
    command = Path(sys.executable).with_name("tinyshake")
    result = subprocess.run([str(command), "inspect", "attention", "--prompt", "hi"], capture_output=True, text=True,
                            env=subprocess_env(home), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no attention" in result.stderr


def test_the_inspect_and_demo_commands_import_no_torch_until_they_run() -> None:
    """``--help`` must stay fast: the modules load torch inside their commands (the package's __init__ aside)."""
    code = (
        "import importlib, pathlib, sys, types\n"
        "import tinyshake\n"
        "package = types.ModuleType('tinyshake.cli')\n"
        "package.__path__ = [str(pathlib.Path(tinyshake.__file__).parent / 'cli')]\n"
        "sys.modules['tinyshake.cli'] = package\n"
        "for name in ('inspect', 'demo', '_render'):\n"
        "    importlib.import_module('tinyshake.cli.' + name)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_inspect_reads_the_best_or_the_last_weights() -> None:
    first, later = tiny(), tiny(n_embd=16)
    with torch.no_grad():
        later.lm_head.bias += torch.arange(65.0)  # a very different distribution: 'z' (64) likeliest
    save_run("r", first, step=1, best=True, metrics=EVALUATED)
    save_run("r", later, step=2, metrics=EVALUATED)
    best = json.loads(invoke("next", "r", "--prompt", "ab", "--json").stdout)
    last = json.loads(invoke("next", "r", "--prompt", "ab", "--json", "--weights", "last").stdout)
    assert (best["weights"], last["weights"]) == ("best", "last")
    expected = {c: p for c, p in inspection.next_distribution(first, VOCAB, "ab")}
    assert all(row["p"] == pytest.approx(expected[row["char"]], abs=1e-6) for row in best["next"])
    assert last["next"][0]["char"] == "z" != best["next"][0]["char"]
    save_run("fresh", first)  # no evaluation yet, so no best: the last weights, and it says so
    assert json.loads(invoke("attention", "fresh", "--json").stdout)["weights"] == "last"


# -- tokens: where the run's tokenizer cuts a text ---------------------------------------------


def test_inspect_tokens_of_a_character_run_cuts_at_every_character() -> None:
    save_run("c", tiny())
    out = invoke("tokens", "c", "--text", "To be\\nor").stdout.splitlines()
    assert out[0] == "c (65 characters): your text cut into its tokens"
    assert out[2:4] == ["T|o| |b|e|\u23ce", "|o|r"]  # the newline token shown, then the line breaks
    assert out[-1] == "8 characters in 8 tokens: 1.00 characters per token"
    data = json.loads(invoke("tokens", "--text", "To be", "--json").stdout)
    assert data == {"run": "c", "tokenizer": "char", "vocab_size": 65, "tokens": list("To be"),
                    "ids": VOCAB.encode("To be"), "characters": 5, "chars_per_token": 1.0}


def test_inspect_tokens_of_unknown_characters_is_one_line_exit_2() -> None:
    save_run("c", tiny())
    result = invoke("tokens", "c", "--text", "caf\u00e9")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "Error: characters not in the vocabulary: '\u00e9'\n"


def test_token_pieces_alternate_colours_on_a_terminal_and_use_separators_without_colour(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = _render.token_pieces(["To", " be", ","], fancy=True)
    assert coloured.plain == "To be," and [str(s.style) for s in coloured.spans] == [
        _render.TOKEN_STYLES[0], _render.TOKEN_STYLES[1], _render.TOKEN_STYLES[0]]
    monkeypatch.setenv("NO_COLOR", "1")  # colour is the only boundary on a terminal: without it, separators
    assert _render.token_pieces(["To", " be", ","], fancy=True).plain == "To| be|,"
    assert _render.token_pieces(["To", " be", ","], fancy=False).plain == "To| be|,"


def test_a_heatmap_on_a_terminal_with_no_color_draws_shades_not_blank_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background colour is all a coloured cell has: without colour, the cells are the plain shades."""
    grid = [[1.0, 0.0], [0.25, 0.75]]
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = _render.heatmap(grid, ["a", "b"], ["a", "b"], fancy=True)
    assert coloured.plain.splitlines()[1:] == ["a     ", "b     "] and any(isinstance(s.style, Style) and s.style.bgcolor for s in coloured.spans)
    monkeypatch.setenv("NO_COLOR", "1")
    plain = _render.heatmap(grid, ["a", "b"], ["a", "b"], fancy=True)
    assert plain.plain.splitlines()[1:] == [f"a {_render.shade(1.0) * 2}{_render.shade(0.0) * 2}",
                                           f"b {_render.shade(0.25) * 2}{_render.shade(0.75) * 2}"]
    assert not any(isinstance(s.style, Style) and s.style.bgcolor for s in plain.spans)
    assert _render.SHADES in _render.legend(fancy=True).plain


def test_inspect_tokens_needs_no_torch(home: Path) -> None:
    save_run("c", tiny())
    command = Path(sys.executable).with_name("tinyshake")
    done = subprocess.run([str(command), "inspect", "tokens", "--text", "hi"], capture_output=True, text=True,
                          env=subprocess_env(home, PYTHONPROFILEIMPORTTIME="1"), timeout=120)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert done.returncode == 0 and "h|i" in done.stdout
    assert "torch" not in imported and "tokenizers" not in imported


def test_a_heatmap_of_several_character_tokens_labels_rows_by_position_and_token() -> None:
    lines = _render.heatmap([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], ["To", " be", ","],
                            ["To", " be", ","], fancy=False).plain.splitlines()
    assert lines[0] == "       0 1 2"  # a ruler of positions: the tokens are on the rows
    assert lines[1:] == [f" 0 To  {_render.shade(1.0) * 2}{_render.shade(0) * 4}",
                         f" 1 \u00b7be {_render.shade(0.5) * 4}{_render.shade(0) * 2}",
                         f" 2 ,   {_render.shade(0) * 4}{_render.shade(1.0) * 2}"]
