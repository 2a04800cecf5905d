"""``tinyshake chat``: streaming on a pseudo-terminal, Ctrl-C and Ctrl-D, piped mode, determinism and errors."""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Iterator, Optional

import pytest
import torch
from conftest import TINYSHAKE, Terminal, colours, default_sigint, on_disk, subprocess_env
from test_train import assert_one_line_error, snapshot
from typer.testing import CliRunner

from tinyshake import checkpoint, corpus, inspection, sampling
from tinyshake.training import train as core
from tinyshake.cli import _render, app
from tinyshake.cli._signals import sigint_flag
from tinyshake.cli.chat import PROMPT, text_writer, write_reply
from tinyshake.errors import UsageError
from tinyshake.session import Session, Unknown, apply_setting, parse_stops

RUN = "tiny"
ANSI_CODES = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"  # colour and mode codes a terminal gets
ANSI = re.compile(ANSI_CODES)
STATS = re.compile(r"([\d,]+) chars in ([\d.]+) s · ([\d,]+) chars/s")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run tiny models on ``n`` CPU threads for a while (``one_thread`` does it for each test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """One mini run, trained for a few steps once per test session (its text is half-learned, which will do)."""
    home = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as patch, torch_threads(1):
        patch.setenv("TINYSHAKE_HOME", str(home))
        for _ in corpus.import_file(corpus_file):
            pass
        data = corpus.load()
        config = core.make_config("mini", data.tokenizer.vocab_size, run=RUN, max_iters=40, eval_interval=40,
                                  eval_iters=2, device="cpu")
        for _ in core.train(config, data):
            pass
    return home / "runs" / RUN


@pytest.fixture
def run_home(home: Path, trained_run: Path) -> Path:
    """This test's home, holding a copy of the trained run."""
    shutil.copytree(trained_run, home / "runs" / RUN)
    return home


def invoke(*args: str, stdin: Optional[str] = None):
    return CliRunner().invoke(app, ["chat", *args], input=stdin)


def expected(prompt: str, seed: int, stops: tuple[str, ...] = (), run: str = RUN, weights: str = "best",
             **settings) -> str:
    """The continuation sampled in this process, as the chat command should print it (refill is its default),
    ending with a newline as every text tool's output does."""
    loaded = checkpoint.load(run, weights=weights)
    generator, _ = sampling.make_generator("cpu", seed)
    settings = sampling.SamplingSettings(**{"overflow": "refill", **settings})
    stream = sampling.stream_text(loaded.model, loaded.tokenizer.encode(prompt), settings, loaded.tokenizer.decode,
                                  stops, generator)
    return ended("".join(stream))


def ended(text: str) -> str:
    """``text`` as piped chat prints it: with a newline at its end, added where it has none."""
    return text if text.endswith("\n") else text + "\n"


# -- piped and --prompt mode ------------------------------------------------------------------


def test_prompt_prints_only_the_continuation(run_home):
    result = invoke("--prompt", "ROMEO:", "--seed", "7", "--max-new-tokens", "120", "--stop", "")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected("ROMEO:", 7, max_new_tokens=120)
    assert len(result.stdout.removesuffix("\n")) == 120 and result.stdout.endswith("\n") and not result.stderr


def test_piped_stdin_streams_one_continuation_from_the_installed_command(run_home):
    args = [TINYSHAKE, "chat", "--seed", "3", "--max-new-tokens", "200"]
    done = subprocess.run(args, input="JULIET:\n", capture_output=True, text=True, timeout=60,
                          env=subprocess_env(run_home))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected("JULIET:\n", 3, stops=("\n\n",), max_new_tokens=200)
    assert done.stdout and "\x1b" not in done.stdout and ">>>" not in done.stdout and not done.stderr


def test_the_default_stop_is_a_blank_line_which_is_not_printed(run_home):
    """Greedy text settles into a loop; stopped at a blank line, the reply holds none and is shorter."""
    full = invoke("-p", "KING:\n", "-t", "0", "--stop", "", "--max-new-tokens", "400").stdout
    stopped = invoke("-p", "KING:\n", "-t", "0", "--max-new-tokens", "400").stdout
    assert "\n\n" in full
    assert stopped == full[: full.index("\n\n")]
    assert invoke("-p", "KING:\n", "-t", "0", "--stop", r"\n", "--max-new-tokens", "400").stdout == \
        full[: full.index("\n")]


def test_the_same_seed_gives_the_same_text_and_another_seed_other_text(run_home):
    first = invoke("-p", "First Citizen:\n", "--seed", "11", "--stop", "", "--max-new-tokens", "80").stdout
    assert first == invoke("-p", "First Citizen:\n", "--seed", "11", "--stop", "", "--max-new-tokens", "80").stdout
    assert first != invoke("-p", "First Citizen:\n", "--seed", "12", "--stop", "", "--max-new-tokens", "80").stdout


def test_cache_and_no_cache_agree_within_the_block_and_crop_agrees_beyond(run_home):
    block = checkpoint.load(RUN).config.block_size
    common = ("-p", "ROMEO:", "--seed", "5", "--stop", "")
    within = ("--max-new-tokens", str(block - len("ROMEO:")))
    assert invoke(*common, *within).stdout == invoke(*common, *within, "--no-cache").stdout
    beyond = ("--max-new-tokens", str(5 * block))
    cropped = invoke(*common, *beyond, "--overflow", "crop").stdout
    assert len(cropped.removesuffix("\n")) == 5 * block
    assert cropped == invoke(*common, *beyond, "--no-cache").stdout


def test_temperature_zero_is_the_argmax(run_home):
    loaded = checkpoint.load(RUN)
    block = loaded.config.block_size
    ids = loaded.tokenizer.encode("MENENIUS:\n")
    with torch.no_grad():
        for _ in range(3 * block):
            logits, _ = loaded.model(torch.tensor([ids[-block:]]))
            ids.append(int(logits[0, -1].argmax()))
    greedy = loaded.tokenizer.decode(ids[len("MENENIUS:\n"):])
    result = invoke("-p", "MENENIUS:\n", "-t", "0", "--overflow", "crop", "--stop", "", "--max-new-tokens",
                    str(3 * block))
    assert result.stdout == greedy


def test_an_empty_prompt_starts_from_token_zero(run_home):
    result = invoke("-p", "", "--seed", "2", "--stop", "", "--max-new-tokens", "60")
    loaded = checkpoint.load(RUN)
    generator, _ = sampling.make_generator("cpu", 2)
    settings = sampling.SamplingSettings(max_new_tokens=60, overflow="refill")
    assert result.stdout == ended(loaded.tokenizer.decode(list(sampling.generate(loaded.model, [0], settings,
                                                                                 generator))))


def test_unknown_characters_are_one_line_errors_unless_dropped(run_home):
    result = invoke("-p", "Café ROMEO€:")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["Error: characters not in the vocabulary: 'é', '€'; to leave them "
                                                  "out, chat with --unknown drop (or type /set unknown drop)"]
    dropped = invoke("-p", "Café ROMEO€:", "--unknown", "drop", "--seed", "4", "--max-new-tokens", "50")
    assert dropped.exit_code == 0
    assert dropped.stdout == expected("Caf ROMEO:", 4, stops=("\n\n",), max_new_tokens=50)


def test_without_runs_it_says_how_to_train_one(home):
    result = invoke("-p", "hi")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "tinyshake train" in lines[0] and "Traceback" not in result.output


def test_tiny_temperatures_are_greedy_and_bad_input_is_one_line(run_home):
    greedy = invoke("-p", "ROMEO:", "-t", "0", "--max-new-tokens", "40", "--stop", "")
    assert invoke("-p", "ROMEO:", "-t", "1e-45", "--max-new-tokens", "40", "--stop", "").stdout == greedy.stdout
    for value in ("inf", "nan"):
        bad = invoke("-p", "x", "-t", value)
        assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1, value
    done = subprocess.run([TINYSHAKE, "chat"], input=b"ROMEO\xff:", capture_output=True, timeout=60,
                          env=subprocess_env(run_home))
    assert done.returncode == 2 and done.stderr.decode().strip() == "Error: input is not UTF-8 (byte 0xff at character 5)"


def test_probs_in_a_pipe_are_one_character_and_probability_per_line(run_home):
    lines = invoke("-p", "ROMEO:", "--seed", "3", "--max-new-tokens", "30", "--stop", "", "--probs").stdout.splitlines()
    assert len(lines) == 30
    text = "".join(line.split("\t")[0].replace("\\n", "\n") for line in lines)
    assert ended(text) == expected("ROMEO:", 3, max_new_tokens=30)
    assert all(0 < float(line.split("\t")[1]) <= 1 for line in lines)


def test_a_missing_run_or_bad_setting_is_a_one_line_usage_error(run_home):
    missing = invoke("--run", "nope", "-p", "x")
    assert missing.exit_code == 2 and f"runs: {RUN}" in missing.stderr
    for args in (["--top-p", "0"], ["-t", "-1"], ["--top-k", "0"], ["--max-new-tokens", "-5"], ["--seed", "-3"],
                 ["--seed", str(2**64)]):
        bad = invoke("-p", "x", *args)
        assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == "", args


# -- /set and friends ---------------------------------------------------------------------------


def test_set_changes_settings_live_and_rejects_bad_values(run_home):
    session = Session(checkpoint.load(RUN), sampling.SamplingSettings(), parse_stops(None), Unknown.error,
                      torch.device("cpu"), seed=1)
    assert apply_setting(session, "temperature", "0.8") == "0.8" and session.settings.temperature == 0.8
    assert apply_setting(session, "top-k", "40") == "40" and session.settings.top_k == 40
    assert apply_setting(session, "top_k", "off") == "off" and session.settings.top_k is None
    assert apply_setting(session, "stop", r"\n") == r"'\n'" and session.stops == ["\n"]
    assert apply_setting(session, "cache", "off") == "off" and not session.settings.use_cache
    first = torch.rand(3, generator=session.generator)
    apply_setting(session, "seed", "1")
    assert torch.equal(torch.rand(3, generator=session.generator), first)
    for name, value in (("temperature", "hot"), ("top_p", "2"), ("overflow", "wrap"), ("colour", "red")):
        with pytest.raises(UsageError):
            apply_setting(session, name, value)
    with pytest.raises(UsageError, match="^seed must be a whole number from 0 to 2"):
        apply_setting(session, "seed", "-3")
    assert session.seed == 1
    assert session.settings.temperature == 0.8  # a bad value changes nothing


def test_history_is_cropped_to_the_block_and_keeps_the_stop_string(run_home):
    session = Session(checkpoint.load(RUN), sampling.SamplingSettings(max_new_tokens=200), ["\n\n"], Unknown.error,
                      torch.device("cpu"), seed=8)
    stream = session.start(session.encode("A" * 100)[0])
    text = "".join(stream)
    session.keep(stream)
    assert len(session.history) == session.block_size
    assert session.loaded.tokenizer.decode(stream.ids).startswith(text)
    assert stream.stopped is None or session.loaded.tokenizer.decode(stream.ids).endswith("\n\n")


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test, whatever pytest inherited (a shell's `cmd &` ignores SIGINT)."""
    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


def test_ctrl_c_raises_a_flag_while_a_reply_streams_and_the_old_handler_comes_back(run_home, python_sigint):
    before = signal.getsignal(signal.SIGINT)
    with sigint_flag() as interrupted:
        assert not interrupted()
        signal.raise_signal(signal.SIGINT)  # no KeyboardInterrupt here
        assert interrupted()
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    invoke("-p", "ROMEO:", "--max-new-tokens", "5")
    assert signal.getsignal(signal.SIGINT) is before


def test_an_interrupted_reply_stops_between_characters_and_shows_what_was_held(run_home):
    session = Session(checkpoint.load(RUN), sampling.SamplingSettings(max_new_tokens=1000), ["\nZZZ"], Unknown.error,
                      torch.device("cpu"), seed=6)
    out, calls = io.StringIO(), []
    stream = session.start(session.encode("ROMEO:\n")[0])
    stats = write_reply(stream, text_writer(out), lambda: calls.append(1) or len(calls) >= 30)
    assert stats.ended == "interrupted" and len(calls) == 30 and stats.chars < 1000
    assert out.getvalue() == session.loaded.tokenizer.decode(stream.ids)  # a held newline is shown too
    assert session.loaded.model.training  # the sampler was closed, which restores the model's mode


# -- the terminal session, on a pseudo-terminal ------------------------------------------------------


class ChatTerminal(Terminal):
    """``tinyshake chat --run tiny`` on a pseudo-terminal, with the prompt's timing taken care of."""

    def ready(self, after: int) -> None:
        """Wait for the prompt after offset ``after``, and for readline to take the terminal over.

        A Ctrl-C typed in the instant between the prompt's appearance and
        readline's wait for keys is only seen at the next key (a race in
        CPython's readline), so control keys wait a moment.
        """
        self.expect(re.escape(PROMPT), after)
        time.sleep(0.3)

    at = 0  # the output offset after which the next prompt appears

    def turn(self, line: str, until: str = STATS.pattern) -> str:
        """At the next prompt, type ``line``; returns the raw output up to ``until`` (by default a reply's stats line)."""
        self.ready(self.at)
        mark = self.send(line + "\n")
        found = self.expect(until, mark)
        self.at = found.end()
        return self.output[mark: found.start()]

    def leave(self, after: int, keys: str) -> int:
        """At the prompt after offset ``after``, type ``keys`` (Ctrl-D or /bye); returns the exit status."""
        self.ready(after)
        self.send(keys)
        return self.wait()


@pytest.fixture
def chat_terminal(run_home):
    opened: list[ChatTerminal] = []

    def start(*args: str, run: str = RUN) -> ChatTerminal:
        """Start a session and wait for its first prompt."""
        opened.append(ChatTerminal(run_home, "chat", *(["--run", run] if run else []), *args))
        opened[-1].expect(re.escape(PROMPT))
        return opened[-1]

    yield start
    for term in opened:
        term.close()


def test_characters_stream_as_they_are_sampled_and_ctrl_d_exits_0(chat_terminal):
    term = chat_terminal("--seed", "1", "--stop", "", "--max-new-tokens", "1500")
    term.expect(r"Chatting with .*tiny")
    mark = term.send("ROMEO:\n")
    echo = term.expect(r"ROMEO:\r?\n", mark)
    stats = term.expect(STATS.pattern, echo.end())
    chars, seconds = int(stats.group(1).replace(",", "")), float(stats.group(2))
    assert chars == 1500
    line_start = term.output.rfind("\n", 0, stats.start())
    assert "\x1b[2m" in term.output[line_start: stats.start()]  # the stats line is dim
    reply = ANSI.sub("", term.output[echo.end(): line_start]).replace("\r", "")
    assert len(reply) >= 1500 - 1 and "ROMEO" not in reply[:1]
    text_reads = [(t, text) for t, offset, text in term.reads
                  if echo.end() <= offset < line_start and ANSI.sub("", text).strip()]
    stats_time = next(t for t, offset, text in term.reads if offset + len(text) >= stats.end())
    assert len(text_reads) >= 10, "the reply arrived in a few large pieces, not character by character"
    assert stats_time - text_reads[0][0] >= 0.3 * seconds, "the reply was shown at the end, not as it was sampled"
    assert text_reads[len(text_reads) // 2][0] - text_reads[0][0] >= 0.2 * seconds  # spread over the reply
    assert term.leave(stats.end(), "\x04") == 0


def test_ctrl_c_stops_a_reply_and_keeps_the_session(chat_terminal):
    term = chat_terminal("--seed", "2", "--stop", "", "--max-new-tokens", "1000000")
    mark = term.send("ROMEO:\n")
    term.expect(r"ROMEO:\r?\n(.|\n){200}", mark)  # a long reply is under way
    interrupted_at = time.perf_counter()
    mark = term.send("\x03")
    stats = term.expect(STATS.pattern + r" · interrupted", mark, timeout=10)
    assert time.perf_counter() - interrupted_at < 5
    assert int(stats.group(1).replace(",", "")) < 1000000
    term.ready(stats.end())
    mark = term.send("\x03")  # Ctrl-C at the prompt only reminds how to leave
    hint = term.expect("Use Ctrl-D or /bye to exit", mark)
    term.ready(hint.end())
    mark = term.send("/set max_new_tokens 25\n")
    term.expect("max_new_tokens = 25", mark)
    mark = term.send("JULIET:\n")
    second = term.expect(STATS.pattern, mark)
    assert second.group(1) == "25" and "interrupted" not in term.output[second.end(): second.end() + 20]
    assert term.leave(second.end(), "/bye\n") == 0


@pytest.mark.parametrize("columns", [80, 120])
def test_help_fits_the_terminal_and_wraps_with_a_hanging_indent(run_home, terminal, columns):
    term = terminal(run_home, "chat", "--run", RUN, columns=columns)
    mark = term.expect(re.escape(PROMPT)).end()
    term.send("/help\n")
    term.expect("Ctrl-C stops a reply", mark)
    lines = ANSI.sub("", term.output[mark:]).replace("\r", "").splitlines()
    assert max(len(line) for line in lines) <= columns
    first = next(i for i, line in enumerate(lines) if line.startswith("/set NAME VALUE"))
    indent = lines[first].index("change")
    assert lines[first + 1].startswith(" " * indent) and lines[first + 1][indent] != " "  # under the description


def test_commands_errors_and_reset_keep_the_session_going(chat_terminal):
    term = chat_terminal("--seed", "3", "--max-new-tokens", "20", "--stop", "")
    mark = term.send("/help\n")
    for command in ("/set NAME VALUE", "/show", "/reset", "/bye", "temperature, top_k"):
        term.expect(re.escape(command), mark)
    mark = term.send("Café\n")
    term.expect("Error:" + ANSI_CODES + re.escape(" characters not in the vocabulary: 'é'"), mark)
    term.expect(">>> ", mark)
    mark = term.send("/set temperature 0\n")
    term.expect("temperature = 0", mark)
    mark = term.send("/set temperature hot\n")
    term.expect("Error:" + ANSI_CODES + " 'hot' is not a valid value for temperature", mark)
    mark = term.send("/frobnicate\n")
    term.expect("Error:" + ANSI_CODES + " unknown command '/frobnicate'", mark)
    mark = term.send("ROMEO:\n")
    term.expect(STATS.pattern, mark)
    mark = term.send("/show\n")
    term.expect(r"context +27 of 32 characters", mark)  # "ROMEO:\n" and 20 sampled characters
    term.expect(r"temperature +0\b", mark)
    mark = term.send("/reset\n")
    term.expect("Conversation cleared", mark)
    mark = term.send("/show\n")
    shown = term.expect(r"context +0 of 32 characters[^>]*unknown +error", mark)
    assert term.leave(shown.end(), "\x04") == 0


# -- which run, and which of its weights ----------------------------------------------------------------------


def newer_run(name: str) -> None:
    """Another run with other weights (so it writes other text), saved after RUN (so it is the latest)."""
    loaded = checkpoint.load(RUN, weights="last")
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.mul_(0.5)
    checkpoint.save(name, loaded.model, dict(on_disk(RUN), name=name), checkpoint.load_state(loaded.record))


def test_chat_eval_and_inspect_pick_the_run_alike(run_home, cached):
    """No name: the run trained last; '' and unknown names: the same one-line errors from all three commands."""
    newer_run("newer")
    args = ("-p", "ROMEO:", "--seed", "1", "--stop", "", "--max-new-tokens", "60")
    assert invoke(*args).stdout == expected("ROMEO:", 1, run="newer", max_new_tokens=60)
    assert invoke(*args).stdout != invoke(*args, "--run", RUN).stdout
    assert CliRunner().invoke(app, ["eval"]).stdout.startswith("newer (last weights, step 40): full val loss")
    assert json.loads(CliRunner().invoke(app, ["inspect", "next", "--json"]).stdout)["run"] == "newer"
    commands = (["chat", "-p", "x", "--run"], ["eval"], ["inspect", "next"])
    for command in commands:
        assert_one_line_error(CliRunner().invoke(app, [*command, ""]), "invalid run name ''")
        assert_one_line_error(CliRunner().invoke(app, [*command, "nope"]), "no run named 'nope'", "runs: newer, tiny")


@pytest.mark.parametrize("command", [["chat", "-p", "x"], ["eval"], ["inspect", "next"]], ids=["chat", "eval", "inspect"])
def test_without_runs_every_command_says_how_to_train_one(home, command):
    assert_one_line_error(CliRunner().invoke(app, command), "there are no trained runs in",
                          "train one first: tinyshake train --model mini")


def test_weights_best_and_last_load_what_the_banner_says(run_home, chat_terminal):
    stored = on_disk(RUN)
    assert stored["best_step"] != stored["step"]  # the run's best weights are not its last
    args = ("-p", "ROMEO:", "--seed", "9", "--stop", "", "--max-new-tokens", "80")
    best, last = invoke(*args).stdout, invoke(*args, "--weights", "last").stdout
    assert best == expected("ROMEO:", 9, max_new_tokens=80) and best == invoke(*args, "--weights", "best").stdout
    assert last == expected("ROMEO:", 9, weights="last", max_new_tokens=80) and last != best
    term = chat_terminal("--weights", "best")
    term.expect(re.escape(f"best weights · stage mini · step {stored['best_step']} · best val "
                          f"{stored['best_val']:.4f} (step {stored['best_step']})"))
    term = chat_terminal("--weights", "last")
    term.expect(re.escape(f"last weights · stage mini · step {stored['step']} · block 32"))  # no evaluation there


# -- confidence: --probs, /set probs, /probs ------------------------------------------------------------------------

LEGEND = "colour = the model's probability of each character"
BAND_COLOURS = {"32", "33", "38;5;208", "31"}  # green, yellow, dark orange, red: the four bands
def test_probs_on_a_terminal_colours_each_character_and_shows_the_legend_once(chat_terminal):
    term = chat_terminal("--probs", "--seed", "4", "--stop", "", "--max-new-tokens", "60")
    term.expect(re.escape(LEGEND))
    shown = colours(term.turn("ROMEO:")) | colours(term.turn("JULIET:"))
    assert shown <= BAND_COLOURS and len(shown) >= 2, shown  # coloured by band, and not all alike
    assert term.output.count(LEGEND) == 1
    assert term.leave(term.at, "/bye\n") == 0


def test_set_probs_on_turns_colour_on_with_one_legend_and_off_again(chat_terminal):
    term = chat_terminal("--seed", "4", "--stop", "", "--max-new-tokens", "60")
    assert LEGEND not in term.output
    assert not colours(term.turn("ROMEO:"))  # plain chat: no colour in a reply
    term.turn("/set probs on", re.escape(LEGEND))
    assert colours(term.turn("JULIET:")) & BAND_COLOURS
    term.turn("/set probs on", "probs = on")  # already on: no second legend
    term.turn("/set probs off", "probs = off")
    assert not colours(term.turn("KING:"))
    assert term.output.count(LEGEND) == 1
    assert term.leave(term.at, "\x04") == 0


def test_slash_probs_lists_the_likeliest_next_characters(run_home, chat_terminal):
    loaded = checkpoint.load(RUN)
    dist = inspection.next_distribution(loaded.model, loaded.tokenizer, "\n")  # an empty conversation: token 0
    term = chat_terminal()
    mark = term.send("/probs\n")
    entropy = term.expect(r"entropy ([\d.]+) bits", mark)
    shown = ANSI.sub("", term.output[mark: entropy.start()])
    assert "the next character after the 0 characters so far" in shown
    rows = re.findall(r"^  (\S) (\d\.\d{4})", shown.replace("\r", ""), re.M)
    assert rows == [(_render.visible(c), f"{p:.4f}") for c, p in dist[:10]]
    assert entropy.group(1) == f"{inspection.entropy_bits(dist):.2f}"
    assert term.leave(entropy.end(), "\x04") == 0


# -- Ctrl-C from the installed command -------------------------------------------------------------------------

LONG_REPLY = ("--seed", "1", "--stop", "", "--max-new-tokens", "100000000")


def chat_process(home: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([TINYSHAKE, "chat", "--run", RUN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=subprocess_env(home), preexec_fn=default_sigint)


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_ctrl_c_while_chat_starts_exits_130_without_a_traceback_or_a_write(run_home, delay):
    """Imports, loading the run, building the model or the first characters: wherever the Ctrl-C lands."""
    before = snapshot(run_home)
    proc = chat_process(run_home, "-p", "ROMEO:", *LONG_REPLY)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err, (proc.returncode, err)
    assert snapshot(run_home) == before


@pytest.mark.parametrize("streaming", [False, True], ids=["loading", "streaming"])
def test_two_ctrl_c_in_pipe_mode_exit_130_without_a_traceback(run_home, streaming):
    proc = chat_process(run_home, "-p", "ROMEO:", *LONG_REPLY)
    if streaming:
        assert proc.stdout.read(100)  # the reply is under way
    else:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
