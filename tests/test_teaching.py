"""A terminal that teaches (#21): it leads the learner on, shows text improving, and compares like with like."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tinyshake import demos
from tinyshake.store import record
from tinyshake.training import stages
from tinyshake.cli import app
from test_terminal_fit import screen_lines

runner = CliRunner()
TINY = ("--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--device", "cpu")


def test_each_stage_leads_to_the_next_in_the_ladders_order_and_the_last_to_none() -> None:
    order = [name for name in stages.STAGES if name not in stages.SIZED]
    assert order[-1] == "modern" and stages.SIZED and set(stages.SIZED) <= set(stages.STAGES)
    assert [stages.next_stage(name) for name in order[:-1]] == [stages.STAGES[name] for name in order[1:]]
    assert stages.next_stage(order[-1]) is None


def test_the_stages_sized_for_a_budget_stand_beside_the_ladder_and_suggest_nothing() -> None:
    assert all(stages.next_stage(name) is None for name in stages.SIZED)


def test_train_on_a_terminal_ends_by_naming_the_next_stage_and_what_it_adds(cached, terminal, home) -> None:
    term = terminal(home, "train", "--model", "bigram", *TINY, "--sample-chars", "20")
    assert term.wait(timeout=120) == 0, term.output[-2000:]
    said = " ".join(line.strip() for line in screen_lines(term.output))
    assert f"Next on the ladder: tinyshake train --model head ({stages.STAGES['head'].adds})" in said


def test_train_in_a_pipe_keeps_the_lectures_log_without_the_hint(cached) -> None:
    result = runner.invoke(app, ["train", "--model", "bigram", *TINY, "--sample-chars", "0"])
    assert result.exit_code == 0, result.output
    assert "Next on the ladder" not in result.output
    assert result.stdout.splitlines()[0].startswith("step 0: train loss")


def test_demo_all_on_a_terminal_waits_for_enter_and_ctrl_d_ends_it(cached, terminal, home) -> None:
    first, second, third = list(demos.DEMOS)[:3]
    term = terminal(home, "demo", "all")
    asked = term.expect(rf"Press Enter for the next demo \({second}\)")
    assert third not in term.output[asked.end():]  # nothing after the first demo until Enter
    after = term.send("\n")
    term.expect(rf"Press Enter for the next demo \({third}\)", after)
    after = term.send("\x04")
    assert term.wait(timeout=60) == 0
    assert "Traceback" not in term.output and "Press Enter" not in term.output[after:]


def test_demo_all_in_a_pipe_does_not_wait(cached) -> None:
    result = runner.invoke(app, ["demo", "all"], input="")
    assert result.exit_code == 0 and "Press Enter" not in result.output
    assert all(f"== {name}:" in result.stdout for name in demos.DEMOS)


def _train_tiny(run: str, sample_at_each_evaluation: bool) -> tuple[list[tuple[int, float, float]], list[int]]:
    """Train a tiny head stage with dropout; its evaluations and a draw from the global stream at its end."""
    from tinyshake import corpus, sampling
    from tinyshake.training import train as core
    from tinyshake.training.plan import make_plan

    plan = make_plan("head", run, max_iters=20, eval_interval=10, eval_iters=2, batch_size=4, dropout=0.2,
                     device="cpu")
    rows, model, after = [], None, []
    for event in core.train(plan, corpus.load(corpus.DEFAULT_CORPUS)):
        if isinstance(event, core.Started):
            model = event.model
        elif isinstance(event, core.Evaluated):
            rows.append((event.step, event.train, event.val))
            if sample_at_each_evaluation:
                sampling.showcase(model, [sampling.START_TOKEN], 30)
                assert model.training  # put back in training mode, dropout and all
        elif isinstance(event, core.Finished):
            after = list(sampling.generate(event.model, [0], sampling.SamplingSettings(max_new_tokens=20)))
    return rows, after


def test_sampling_at_each_evaluation_leaves_the_trainings_numbers_and_random_stream_alone(cached) -> None:
    assert _train_tiny("quiet", False) == _train_tiny("sampled", True)


def test_train_on_a_terminal_adds_a_sample_under_the_table_at_each_evaluation(cached, terminal, home) -> None:
    term = terminal(home, "train", "--model", "bigram", *TINY, "--sample-chars", "0")
    assert term.wait(timeout=120) == 0, term.output[-2000:]
    lines = screen_lines(term.output)
    heading = max(i for i, line in enumerate(lines) if line.startswith("what it writes from a newline"))
    steps = [line.split()[0] for line in lines[heading + 1:heading + 4]]
    assert steps == ["0", "10", "final"]  # the final weights (step 20) are sampled too


def test_the_showcase_draw_is_the_same_for_the_same_model_and_seed() -> None:
    import torch

    from tinyshake import sampling
    from tinyshake.models.model import ModelConfig, build

    torch.manual_seed(0)
    model = build(ModelConfig(vocab_size=65, block_size=8, n_embd=16, n_head=2, n_layer=1))
    before = torch.random.get_rng_state()
    first = sampling.showcase(model, [0], 40)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert sampling.showcase(model, [0], 40) == first != sampling.showcase(model, [0], 40, seed=7)


def _trained(*stages_and_runs: tuple[str, str]) -> None:
    for stage, run in stages_and_runs:
        result = runner.invoke(app, ["train", "--model", stage, "--run", run, "--max-iters", "3", "--eval-iters", "1",
                                     "--batch-size", "2", "--sample-chars", "0", "--device", "cpu"])
        assert result.exit_code == 0, result.output


def test_sample_continues_one_prompt_with_every_run_and_the_same_seed(cached) -> None:
    from tinyshake import checkpoint, sampling

    _trained(("bigram", "b"), ("head", "h"))
    result = runner.invoke(app, ["sample", "b", "h", "--prompt", "ROMEO:\\n", "--chars", "40"])
    assert result.exit_code == 0, result.output
    blocks = result.stdout.split("\n\n")
    assert [block.splitlines()[0].split(" (")[0] for block in blocks] == ["== b", "== h"]
    for name, block in zip("bh", blocks):
        loaded = checkpoint.load(name)
        ids = sampling.showcase(loaded.model, loaded.tokenizer.encode("ROMEO:\n"), 40, sampling.SHOWCASE_SEED)
        assert block.split("\n", 1)[1].rstrip("\n") == "ROMEO:\n" + loaded.tokenizer.decode(ids)
    other = runner.invoke(app, ["sample", "b", "h", "--prompt", "ROMEO:\\n", "--chars", "40", "--seed", "7"])
    assert other.exit_code == 0 and other.stdout != result.stdout


@pytest.mark.parametrize("args, message", [
    (["b", "nope"], "no run named 'nope'"),
    (["b", "b"], "named twice"),
    (["b", "--prompt", "caf\u00e9"], "run 'b': characters not in the vocabulary"),
])
def test_sample_refuses_bad_input_in_one_line(cached, args, message) -> None:
    _trained(("bigram", "b"))
    result = runner.invoke(app, ["sample", *args])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("columns", [80, 120])
def test_sample_on_a_terminal_puts_two_runs_side_by_side_within_the_width(cached, terminal, home, columns) -> None:
    _trained(("bigram", "b"), ("head", "h"))
    term = terminal(home, "sample", "b", "h", columns=columns)
    assert term.wait(timeout=120) == 0, term.output[-2000:]
    lines = screen_lines(term.output)
    assert max(len(line) for line in lines) <= columns
    assert any(re.search(r"b \(bigram, val [\d.]+\) +h \(head, val [\d.]+\)", line) for line in lines)


def test_a_val_estimated_on_fewer_batches_is_marked_in_runs_and_runs_show(cached) -> None:
    _trained(("bigram", "b"))  # --eval-iters 1
    listed = runner.invoke(app, ["runs"])
    row = next(line for line in listed.stdout.splitlines() if line.startswith("b "))
    assert re.search(r"\d\.\d{4}\* @\d+", row) and "not comparable" in listed.stderr
    assert "not comparable" not in listed.stdout  # piped, stdout keeps one line a row
    shown = runner.invoke(app, ["runs", "show", "b"]).stdout
    assert "estimated on 1 batch per split, not the lecture's 200: not comparable" in shown


@pytest.mark.parametrize("eval_iters, words", [(200, "val 2.5000 (full"), (20, "val 2.5000 on 20 batches (full")])
def test_the_ladders_plain_line_says_when_its_estimate_took_fewer_batches(eval_iters, words) -> None:
    from tinyshake.cli.ladder import plain_line
    from tinyshake.ladder import StageResult

    result = StageResult("bigram", "ladder-bigram", "adds", 4225, 2.5, 2.51, 3.62, 2.49, 3.0, "text", False, eval_iters)
    assert words in plain_line(result)


# -- one convention everywhere ------------------------------------------------------------------------------

CHAT = ("-p", "ROMEO:", "--seed", "1", "--max-new-tokens", "30")


def test_chat_takes_the_run_as_run_and_keeps_run_as_an_alias(cached) -> None:
    _trained(("bigram", "b"), ("head", "h"))
    positional = runner.invoke(app, ["chat", "b", *CHAT])
    assert positional.exit_code == 0 and positional.stdout == runner.invoke(app, ["chat", "--run", "b", *CHAT]).stdout
    assert positional.stdout != runner.invoke(app, ["chat", "h", *CHAT]).stdout  # it did pick the run named
    both = runner.invoke(app, ["chat", "b", "--run", "h", *CHAT])
    assert both.exit_code == 2 and "name the run once" in both.stderr


def test_runs_show_of_an_unknown_run_lists_the_runs(cached) -> None:
    _trained(("bigram", "b"))
    result = runner.invoke(app, ["runs", "show", "nope"])
    assert result.exit_code == 2 and "no run named 'nope'" in result.stderr and "runs: b" in result.stderr


def test_choices_are_taken_whatever_their_case(cached) -> None:
    trained = runner.invoke(app, ["train", "--model", "BIGRAM", "--device", "CPU", "--dtype", "Float32",
                                  "--max-iters", "2", "--eval-iters", "1", "--sample-chars", "0"])
    assert trained.exit_code == 0, trained.output
    stored = record.read_record("bigram")
    assert stored.stage == "bigram" and stored.hyper["device"] == "cpu" and stored.dtype == "float32"
    assert runner.invoke(app, ["chat", "bigram", *CHAT, "--weights", "LAST", "--overflow", "Crop",
                               "--unknown", "DROP"]).exit_code == 0
    assert runner.invoke(app, ["eval", "bigram", "--split", "VAL"]).exit_code == 0
    assert runner.invoke(app, ["stages", "Mini"]).exit_code == 0


@pytest.mark.parametrize("args, flag", [(["--lr", "-1"], "--lr must be"), (["--n-embd", "30", "--n-head", "4"],
                                         "--n-embd (30) must be divisible by --n-head (4)"),
                                        (["--warmup", "2"], "--warmup and --warmdown")])
def test_an_error_names_the_option_as_typed(cached, args, flag) -> None:
    result = runner.invoke(app, ["train", *args, "--max-iters", "1"])
    assert result.exit_code == 2 and flag in result.stderr and "learning_rate" not in result.stderr


def test_runs_show_says_where_it_trained_when_as_runs_does_and_aligns_its_numbers(cached) -> None:
    _trained(("bigram", "b"))
    shown = runner.invoke(app, ["runs", "show", "b"]).stdout.splitlines()
    facts = {line[:12].strip(): line[12:] for line in shown if line[:1].isalpha() and "  " in line}
    assert re.fullmatch(r"cpu, float32, \d+ threads", facts["trained on"])  # resolved, not "auto"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", facts["updated"])
    assert facts["updated"] in runner.invoke(app, ["runs"]).stdout
    evaluations = len(record.read_record("b").evaluations())
    start = shown.index("evaluations") + 1
    rows = shown[start:start + 1 + evaluations]  # the header, then a row per evaluation
    assert evaluations > 1 and len({len(line) for line in rows}) == 1  # right-aligned: all end in one column


def test_ctrl_c_while_chat_loads_leaves_a_clean_line(cached, terminal, home) -> None:
    _trained(("bigram", "b"))
    term = terminal(home, "chat", "b")
    term.expect("Loading PyTorch")
    term.send("\x03")
    assert term.wait(timeout=60) == 130
    assert term.output.endswith("\n") and "Traceback" not in term.output


def test_declining_the_gpt_stage_on_a_cpu_says_so_in_one_line(cached, terminal, home) -> None:
    term = terminal(home, "train", "--model", "gpt", "--device", "cpu")
    term.expect(r"Train it anyway\?")
    after = term.send("n\n")
    assert term.wait(timeout=60) == 1
    said = [line.strip() for line in screen_lines(term.output[after:]) if line.strip() not in ("", "n")]
    assert said == ["Not trained; nothing was written."]


def test_a_resumed_run_shows_its_earlier_rows_and_the_sample_has_a_heading(cached, terminal, home) -> None:
    first = runner.invoke(app, ["train", "--model", "bigram", *TINY, "--sample-chars", "0"])
    assert first.exit_code == 0, first.output
    term = terminal(home, "train", "--run", "bigram", "--resume", "--max-iters", "40", "--sample-chars", "20")
    assert term.wait(timeout=120) == 0, term.output[-2000:]
    lines = screen_lines(term.output)
    table = lines[max(i for i, line in enumerate(lines) if "bigram · run bigram" in line):]
    steps = [cells[1].strip() for cells in (line.split("│") for line in table) if len(cells) > 2]
    assert steps[:2] == ["0", "10"] and "30" in steps  # the rows it had, then the new ones
    assert "A sample of 20 characters, from a newline:" in term.output
