"""``tinyshake demo``: the notebook's numbers with the default seeds, independent checks with others."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from conftest import subprocess_env
from tinyshake import corpus, demos
from tinyshake.cli import app
from tinyshake.cli.demo import render

runner = CliRunner()


# -- the lecture notebook's printed numbers (cells In [9] to In [42]), as torch printed them ----------

BOW_X0 = """\
tensor([[ 0.1808, -0.0700],
        [-0.3596, -0.9152],
        [ 0.6258,  0.0255],
        [ 0.9545,  0.0643],
        [ 0.3612,  1.1679],
        [-1.3499, -0.5102],
        [ 0.2360, -0.2398],
        [-0.9211,  1.5433]])"""
BOW_XBOW0 = """\
tensor([[ 0.1808, -0.0700],
        [-0.0894, -0.4926],
        [ 0.1490, -0.3199],
        [ 0.3504, -0.2238],
        [ 0.3525,  0.0545],
        [ 0.0688, -0.0396],
        [ 0.0927, -0.0682],
        [-0.0341,  0.1332]])"""
ONES = """\
tensor([[1., 1., 1.],
        [1., 1., 1.],
        [1., 1., 1.]])"""
MATMUL_B = """\
tensor([[2., 7.],
        [6., 4.],
        [6., 5.]])"""
SUMS = """\
tensor([[14., 16.],
        [14., 16.],
        [14., 16.]])"""
TRIL = """\
tensor([[1., 0., 0.],
        [1., 1., 0.],
        [1., 1., 1.]])"""
RUNNING_SUMS = """\
tensor([[ 2.,  7.],
        [ 8., 11.],
        [14., 16.]])"""
TRIL_AVERAGE = """\
tensor([[1.0000, 0.0000, 0.0000],
        [0.5000, 0.5000, 0.0000],
        [0.3333, 0.3333, 0.3333]])"""
RUNNING_AVERAGES = """\
tensor([[2.0000, 7.0000],
        [4.0000, 5.5000],
        [4.6667, 5.3333]])"""
WEI0 = """\
tensor([[1.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
        [0.1574, 0.8426, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
        [0.2088, 0.1646, 0.6266, 0.0000, 0.0000, 0.0000, 0.0000, 0.0000],
        [0.5792, 0.1187, 0.1889, 0.1131, 0.0000, 0.0000, 0.0000, 0.0000],
        [0.0294, 0.1052, 0.0469, 0.0276, 0.7909, 0.0000, 0.0000, 0.0000],
        [0.0176, 0.2689, 0.0215, 0.0089, 0.6812, 0.0019, 0.0000, 0.0000],
        [0.1691, 0.4066, 0.0438, 0.0416, 0.1048, 0.2012, 0.0329, 0.0000],
        [0.0210, 0.0843, 0.0555, 0.2297, 0.0573, 0.0709, 0.2423, 0.2391]])"""
K_VAR = "tensor(1.0449)"
Q_VAR = "tensor(1.0700)"
RAW_VAR = "tensor(17.4690)"
SCALED_VAR = "tensor(1.0918)"
SOFTMAX = "tensor([0.1951, 0.1446, 0.2384, 0.1308, 0.2911])"
SOFTMAX_SHARP = "tensor([0.0327, 0.0030, 0.1618, 0.0013, 0.8013])"
ATTENTION_SHAPE = "torch.Size([4, 8, 16])"


# -- helpers -------------------------------------------------------------------


def assert_in_order(output: str, expected: list[str]) -> None:
    """Each expected string appears in ``output``, after the one before it."""
    position = 0
    for item in expected:
        found = output.find(item, position)
        assert found != -1, f"missing (in order):\n{item}\n--- output ---\n{output}"
        position = found + len(item)


def demo_output(*args: str) -> str:
    result = runner.invoke(app, ["demo", *args])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    return result.output


def shown(label: str, value: object) -> str:
    """How the transcript shows an expression and its value."""
    return f">>> {label}\n{value}"


# -- the notebook's numbers with the default seeds -------------------------------------


def test_bow_prints_the_notebooks_x_and_xbow_and_agrees_three_ways() -> None:
    out = demo_output("bow")
    assert_in_order(out, [BOW_X0, BOW_XBOW0])
    assert shown("torch.allclose(xbow, xbow2, atol=1e-6)", True) in out
    assert shown("torch.allclose(xbow, xbow3, atol=1e-6)", True) in out


def test_matmul_prints_a_b_c_for_each_form_as_the_notebook() -> None:
    assert_in_order(demo_output("matmul"), [ONES, MATMUL_B, SUMS, TRIL, MATMUL_B, RUNNING_SUMS,
                                            TRIL_AVERAGE, MATMUL_B, RUNNING_AVERAGES])


def test_attention_prints_the_notebooks_weights_and_shape() -> None:
    assert_in_order(demo_output("attention"), [WEI0, "t=0", ATTENTION_SHAPE])  # the numbers, the heatmap, the shape


def test_scaling_prints_the_notebooks_variances() -> None:
    out = demo_output("scaling")
    assert_in_order(out, [shown("k.var()", K_VAR), shown("q.var()", Q_VAR), RAW_VAR, SCALED_VAR])
    assert "saturates" in out


def test_softmax_prints_the_notebooks_weights_with_bars() -> None:
    assert_in_order(demo_output("softmax"), [SOFTMAX, "0.2911 " + "#" * round(0.2911 * 40), SOFTMAX_SHARP,
                                             "0.8013 " + "#" * 32])


# -- the lecture's first half, from the cached corpus --------------------------------------------------

CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FIRST_BLOCK = "tensor([18, 47, 56, 57, 58,  1, 15, 47, 58])"
LESSONS = [
    "when input is [18] the target: 47",
    "when input is [18, 47] the target: 56",
    "when input is [18, 47, 56] the target: 57",
    "when input is [18, 47, 56, 57] the target: 58",
    "when input is [18, 47, 56, 57, 58] the target: 1",
    "when input is [18, 47, 56, 57, 58, 1] the target: 15",
    "when input is [18, 47, 56, 57, 58, 1, 15] the target: 47",
    "when input is [18, 47, 56, 57, 58, 1, 15, 47] the target: 58",
]
XB = """\
tensor([[24, 43, 58,  5, 57,  1, 46, 43],
        [44, 53, 56,  1, 58, 46, 39, 58],
        [52, 58,  1, 58, 46, 39, 58,  1],
        [25, 17, 27, 10,  0, 21,  1, 54]])"""
YB = """\
tensor([[43, 58,  5, 57,  1, 46, 43, 39],
        [53, 56,  1, 58, 46, 39, 58,  1],
        [58,  1, 58, 46, 39, 58,  1, 46],
        [17, 27, 10,  0, 21,  1, 54, 39]])"""  # the lecture's first batch (torch.manual_seed(1337), 4 x 8)


def test_tokens_shows_the_65_characters_and_encodes_hii_there(cached: Path) -> None:
    out = demo_output("tokens")
    assert_in_order(out, [shown("len(text)", 1115394), "First Citizen:\nBefore we proceed",
                          shown("print(''.join(chars))", CHARS), shown("vocab_size", 65),
                          shown('encode("hii there")', [46, 47, 47, 1, 58, 46, 43, 56, 43]),
                          shown('print(decode(encode("hii there")))', "hii there")])


def test_batch_shows_the_split_the_first_block_its_lessons_and_the_lectures_batch(cached: Path) -> None:
    out = demo_output("batch")
    assert_in_order(out, [shown("data.shape, data.dtype", "(torch.Size([1115394]), torch.int64)"),
                          shown("len(train_data), len(val_data)", (1003854, 111540)),
                          shown("train_data[:block_size+1]", FIRST_BLOCK), "\n".join(LESSONS),
                          "torch.manual_seed(1337)", shown("xb", XB), shown("yb", YB)])


def test_batch_with_another_seed_is_the_training_codes_draw(cached: Path) -> None:
    data = corpus.load()
    torch.manual_seed(8)
    starts = torch.randint(len(data.train) - 8, (4,))
    xb = torch.stack([data.train[i : i + 8] for i in starts])
    yb = torch.stack([data.train[i + 1 : i + 9] for i in starts])
    out = demo_output("batch", "--seed", "8")
    assert_in_order(out, [FIRST_BLOCK, shown("xb", xb), shown("yb", yb)])


def test_loss_shows_the_uniform_loss_the_lectures_first_loss_and_the_step_0_estimate(cached: Path) -> None:
    out = demo_output("loss")
    assert_in_order(out, [shown("-torch.log(torch.tensor(1/65))", "tensor(4.1744)"),
                          shown("loss", "tensor(4.8786)"),  # the lecture's bigram on its first batch
                          shown("m.token_embedding_table.weight.std()", "tensor(0.9989)"),
                          shown("F.cross_entropy(torch.zeros(32, 65), yb.flatten())", "tensor(4.1744)"),
                          "{'train': 4.7305, 'val': 4.7241}"])  # the bigram script's step 0 line
    assert "grad_fn" not in out


def test_the_first_half_needs_the_corpus() -> None:
    result = runner.invoke(app, ["demo", "tokens"])
    assert result.exit_code == 2 and "tinyshake fetch" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["bow", "--seed", "1180591620717411303424"], "--seed must be a whole number from 0 to 2**64 - 1"),
    (["softmax", "--seed", "18446744073709551616"], "--seed must be a whole number from 0 to 2**64 - 1"),
    (["batch", "--seed", "-1"], "--seed must be a whole number from 0 to 2**64 - 1"),
    (["tokens", "--seed", "3"], "--seed does not apply to the tokens demo"),
])
def test_a_bad_seed_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["demo", *args])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_the_largest_seed_works() -> None:
    assert "torch.manual_seed(18446744073709551615)" in demo_output("bow", "--seed", str(2**64 - 1))


def test_layernorm_normalises_rows_and_batchnorm_columns() -> None:
    out = demo_output("layernorm")
    assert shown("ln.mean(1).round(decimals=4)", torch.zeros(4)) in out
    assert shown("bn.std(0, unbiased=False).round(decimals=4)", torch.ones(6)) in out
    assert shown("torch.allclose(ln, F.layer_norm(x, (6,)), atol=1e-5)", True) in out
    assert shown("torch.allclose(norm(x[:2], 1)[0], ln[0])", True) in out
    assert shown("torch.allclose(norm(x[:2], 0)[0], bn[0])", False) in out


def test_positions_permutation_only_permutes_outputs_until_positions_are_added() -> None:
    out = demo_output("positions")
    allclose = ">>> torch.allclose(out_perm, out[perm], atol=1e-5)\n"
    assert_in_order(out, [allclose + "True", allclose + "False"])
    gap = r">>> \(out_perm - out\[perm\]\)\.abs\(\)\.max\(\)\ntensor\(([\d.e+-]+)\)"
    gaps = [float(g) for g in re.findall(gap, out)]
    assert len(gaps) == 2 and gaps[0] < 1e-5 < 0.01 < gaps[1]


# -- other seeds, checked against independent computations ------------------------------


def test_bow_with_another_seed_matches_cumulative_means() -> None:
    torch.manual_seed(7)
    x = torch.randn(4, 8, 2)
    xbow = x.cumsum(1) / torch.arange(1, 9).view(1, 8, 1)
    out = demo_output("bow", "--seed", "7")
    assert_in_order(out, ["torch.manual_seed(7)", str(x[0]), str(xbow[0])])


def test_matmul_with_another_seed() -> None:
    torch.manual_seed(3)
    b = torch.randint(0, 10, (3, 2)).float()
    averages = torch.stack([b[: i + 1].mean(0) for i in range(3)])
    out = demo_output("matmul", "--seed", "3")
    assert_in_order(out, [str(b), str(b.sum(0).expand(3, 2)), str(b.cumsum(0)), str(averages)])


def _independent_weights(seed: int, causal: bool) -> torch.Tensor:
    torch.manual_seed(seed)
    x = torch.randn(4, 8, 32)
    key, query = nn.Linear(32, 16, bias=False), nn.Linear(32, 16, bias=False)
    with torch.no_grad():
        scores = torch.einsum("btd,bsd->bts", query(x[:1]), key(x[:1]))[0]
    if causal:
        scores = scores.masked_fill(torch.ones(8, 8).triu(1).bool(), float("-inf"))
    return scores.softmax(-1)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_with_another_seed_and_mask_choice(causal: bool) -> None:
    out = demo_output("attention", "--seed", "11", *([] if causal else ["--no-mask"]))
    assert str(_independent_weights(11, causal)) in out
    assert WEI0 not in out


def test_attention_without_mask_lets_every_token_see_every_other() -> None:
    out = demo_output("attention", "--no-mask")
    weights = _independent_weights(1337, causal=False)
    assert bool((weights > 0).all())
    assert str(weights) in out and "encoder" in out
    assert WEI0 not in out


def test_scaling_with_another_seed() -> None:
    torch.manual_seed(5)
    torch.randn(4, 8, 32)
    for _ in range(3):
        nn.Linear(32, 16, bias=False)
    k, q = torch.randn(4, 8, 16), torch.randn(4, 8, 16)
    scores = q @ k.transpose(-2, -1)
    out = demo_output("scaling", "--seed", "5")
    assert_in_order(out, [str(k.var()), str(q.var()), str(scores.var()), str((scores / 4).var())])


def test_softmax_with_a_seed_draws_the_scores() -> None:
    torch.manual_seed(9)
    logits = torch.randn(5)
    out = demo_output("softmax", "--seed", "9")
    assert_in_order(out, [str(logits.softmax(-1)), str((logits * 8).softmax(-1))])


def test_layernorm_and_positions_with_another_seed() -> None:
    torch.manual_seed(21)
    x = torch.randn(4, 6) * 3 + 1
    assert shown("x", x) in demo_output("layernorm", "--seed", "21")
    torch.manual_seed(21)
    idx = torch.randint(0, 65, (6,))
    perm = torch.randperm(6)
    assert_in_order(demo_output("positions", "--seed", "21"), [shown("idx", idx), shown("idx[perm]", idx[perm])])


def test_demos_leave_the_callers_random_stream_alone(cached: Path) -> None:
    torch.manual_seed(0)
    expected = torch.randn(3)
    torch.manual_seed(0)
    for demo in demos.run("all"):
        assert demo.steps
    assert torch.equal(torch.randn(3), expected)


# -- the sequel's byte-pair encoding ----------------------------------------------


def test_bpe_merges_a_hand_checked_text() -> None:
    """aaabdaaabac: aa occurs 4 times (read with overlaps); then aa+a and aa+b tie at 2, and the first one wins."""
    tokens, ids, merges = demos.bpe_merges("aaabdaaabac", 10)
    assert tokens[:4] == ["a", "b", "c", "d"] and ids == [0, 0, 0, 1, 3, 0, 0, 0, 1, 0, 2]
    assert [(tokens[m.pair[0]], tokens[m.pair[1]], m.count, m.token) for m in merges] == [
        ("a", "a", 4, "aa"), ("aa", "a", 2, "aaa"), ("aaa", "b", 2, "aaab")]
    assert [tokens[i] for i in merges[-1].ids] == ["aaab", "d", "aaab", "a", "c"]
    assert [m.idx for m in merges] == [4, 5, 6]  # then no pair occurs twice: it stops


def string_merges(text: str, most: int) -> list[tuple[str, int, list[str]]]:
    """BPE on strings, independently of the demo: the commonest neighbouring pair (first seen on a tie), joined."""
    parts = list(text)
    out = []
    for _ in range(most):
        pairs = list(zip(parts, parts[1:]))
        best = max(pairs, key=lambda p: (pairs.count(p), -pairs.index(p)))
        if pairs.count(best) < 2:
            break
        count, joined, i = pairs.count(best), [], 0
        while i < len(parts):
            if tuple(parts[i:i + 2]) == best:
                joined.append(parts[i] + parts[i + 1])
                i += 2
            else:
                joined.append(parts[i])
                i += 1
        parts = joined
        out.append(("".join(best), count, parts))
    return out


def test_bpe_demo_shows_each_merge_and_the_shorter_sequence() -> None:
    out = demo_output("bpe")
    expected = string_merges(demos.BPE_TEXT, demos.BPE_MERGES)
    assert len(expected) == demos.BPE_MERGES
    vocab = len(set(demos.BPE_TEXT))
    lines = [shown("len(ids), len(tokens)", (len(demos.BPE_TEXT), vocab))]
    for index, (token, count, parts) in enumerate(expected):
        lines += [f"{count})", shown("idx, tokens[idx]", (vocab + index, token)),
                  shown("[tokens[i] for i in ids]", parts), "|".join(parts), shown("len(ids)", len(parts))]
    assert_in_order(out, [*lines, shown("''.join(tokens[i] for i in ids) == text", True)])


def test_bpe_demo_takes_no_seed() -> None:
    result = runner.invoke(app, ["demo", "bpe", "--seed", "3"])
    assert result.exit_code == 2 and "--seed does not apply to the bpe demo" in result.stderr


# -- the command ------------------------------------------------------------------


def test_all_runs_every_demo_in_order(cached: Path) -> None:
    assert list(demos.DEMOS)[:4] == ["tokens", "batch", "loss", "bow"]  # the lecture's order
    out = demo_output("all")
    assert_in_order(out, [f"== {name}: " for name in demos.DEMOS])


def test_no_name_lists_the_demos() -> None:
    out = demo_output()
    for name, spec in demos.DEMOS.items():
        assert re.search(rf"^{name} +{re.escape(spec.summary)}$", out, re.MULTILINE)
    assert "demo all" in out


def test_unknown_demo_is_a_one_line_usage_error_listing_the_demos() -> None:
    result = runner.invoke(app, ["demo", "nope"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown demo 'nope'")
    assert all(name in lines[0] for name in [*demos.DEMOS, "all"])


def test_no_mask_on_a_demo_without_a_mask_is_a_usage_error() -> None:
    result = runner.invoke(app, ["demo", "bow", "--no-mask"])
    assert result.exit_code == 2 and "--no-mask" in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_each_demo_is_a_rich_panel_with_a_heatmap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    screen = _Terminal()
    render(demos.attention(), Console(file=screen, width=120, color_system="truecolor", force_terminal=True))
    text = screen.getvalue()
    assert "\x1b[" in text and "\u256d" in text  # colours and a box
    assert "0.8426" in text and "0.84" in text and "seed 1337" in text


def test_installed_entry_point_piped_has_no_escape_codes(home: Path) -> None:
    command = Path(sys.executable).with_name("tinyshake")
    result = subprocess.run(
        [str(command), "demo", "bow"], capture_output=True, text=True, env=subprocess_env(home), timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "tensor([[ 0.1808, -0.0700]," in result.stdout
