"""A terminal that teaches (#21): it leads the learner on, shows text improving, and compares like with like."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tinyshake import demos, stages
from tinyshake.cli import app
from test_terminal_fit import screen_lines

runner = CliRunner()
TINY = ("--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--device", "cpu")


def test_each_stage_leads_to_the_next_in_the_ladders_order_and_the_last_to_none() -> None:
    order = list(stages.STAGES)
    assert [stages.next_stage(name) for name in order[:-1]] == [stages.STAGES[name] for name in order[1:]]
    assert stages.next_stage(order[-1]) is None


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
