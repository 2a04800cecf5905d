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
from tinyshake import demos
from tinyshake.cli import app
from tinyshake.cli.demo import render

runner = CliRunner()


# -- helpers -------------------------------------------------------------------


def cell_output(notebook: str, cell: int) -> str:
    """The text of notebook cell ``In [cell]`` up to the next cell."""
    start = notebook.index(f"In [{cell}]:")
    end = notebook.find("\nIn [", start + 1)
    return notebook[start : end if end != -1 else None]


def printed_tensors(text: str) -> list[str]:
    """Every ``tensor(...)`` the text prints, as torch printed it (a grad_fn suffix dropped)."""
    found = []
    for match in re.finditer(r"(?<![\w.])tensor\(", text):  # not the source's torch.tensor(...)
        depth = 0
        for end in range(match.start() + len("tensor"), len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        found.append(re.sub(r",\s*grad_fn=<\w+>\)$", ")", text[match.start() : end + 1]))
    return found


def notebook_tensors(notebook: str, *cells: int) -> list[str]:
    return [t for cell in cells for t in printed_tensors(cell_output(notebook, cell))]


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


def test_notebook_parsing_finds_the_printed_tensors(notebook: str) -> None:
    assert printed_tensors(cell_output(notebook, 9))[0].startswith("tensor([[ 0.1808, -0.0700],")
    assert len(notebook_tensors(notebook, 11, 12, 13)) == 9
    assert "grad_fn" not in notebook_tensors(notebook, 26)[0]


def test_bow_prints_the_notebooks_x_and_xbow_and_agrees_three_ways(notebook: str) -> None:
    out = demo_output("bow")
    assert_in_order(out, notebook_tensors(notebook, 9, 10))
    assert shown("torch.allclose(xbow, xbow2, atol=1e-6)", True) in out
    assert shown("torch.allclose(xbow, xbow3, atol=1e-6)", True) in out


def test_matmul_prints_a_b_c_for_each_form_as_the_notebook(notebook: str) -> None:
    assert_in_order(demo_output("matmul"), notebook_tensors(notebook, 11, 12, 13))


def test_attention_prints_the_notebooks_weights_and_shape(notebook: str) -> None:
    out = demo_output("attention")
    wei0 = notebook_tensors(notebook, 26)[0]
    assert wei0.startswith("tensor([[1.0000, 0.0000") and "[0.1574, 0.8426, 0.0000" in wei0
    shape = re.search(r"torch\.Size\(\[[\d, ]+\]\)", cell_output(notebook, 27))
    assert shape is not None and shape.group() == "torch.Size([4, 8, 16])"
    assert_in_order(out, [wei0, "t=0", shape.group()])  # the numbers, the heatmap, the shape


def test_scaling_prints_the_notebooks_variances(notebook: str) -> None:
    k_var, q_var, raw_var = notebook_tensors(notebook, 29, 30, 31)
    scaled_var = notebook_tensors(notebook, 38)[-1]
    assert (raw_var, scaled_var) == ("tensor(17.4690)", "tensor(1.0918)")
    out = demo_output("scaling")
    assert_in_order(out, [shown("k.var()", k_var), shown("q.var()", q_var), raw_var, scaled_var])
    assert "saturates" in out


def test_softmax_prints_the_notebooks_weights_with_bars(notebook: str) -> None:
    plain, sharp = notebook_tensors(notebook, 40, 42)
    out = demo_output("softmax")
    assert_in_order(out, [plain, "0.2911 " + "#" * round(0.2911 * 40), sharp, "0.8013 " + "#" * 32])


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
def test_attention_with_another_seed_and_mask_choice(causal: bool, notebook: str) -> None:
    out = demo_output("attention", "--seed", "11", *([] if causal else ["--no-mask"]))
    assert str(_independent_weights(11, causal)) in out
    assert notebook_tensors(notebook, 26)[0] not in out


def test_attention_without_mask_lets_every_token_see_every_other(notebook: str) -> None:
    out = demo_output("attention", "--no-mask")
    weights = _independent_weights(1337, causal=False)
    assert bool((weights > 0).all())
    assert str(weights) in out and "encoder" in out
    assert notebook_tensors(notebook, 26)[0] not in out


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


def test_demos_leave_the_callers_random_stream_alone() -> None:
    torch.manual_seed(0)
    expected = torch.randn(3)
    torch.manual_seed(0)
    for demo in demos.run("all"):
        assert demo.steps
    assert torch.equal(torch.randn(3), expected)


# -- the command ------------------------------------------------------------------


def test_all_runs_every_demo_in_order() -> None:
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
