"""Runs on BPE tokens: stored and sealed with the run, read back by every command, compared in bits per character."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import on_disk, table_cells, trained_home
from test_train import assert_one_line_error
from tinyshake import checkpoint, corpus, ladder, tokens
from tinyshake.store import record
from tinyshake.cli import app

SMALL = ["--n-embd", "16", "--n-head", "2", "--n-layer", "1", "--block-size", "8", "--batch-size", "4",
         "--eval-iters", "2", "--device", "cpu", "--sample-chars", "0"]
BPE = ["--model", "mini", "--tokenizer", "bpe", "--vocab-size", "120", *SMALL]


def cli(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "\x1b" not in result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_file) -> Path:
    """A BPE run and a character run of the same small model, trained once for the module."""
    steps = ["--max-iters", "20", "--eval-interval", "10"]
    return trained_home(tmp_path_factory, corpus_file, {"b": [*BPE, *steps], "c": ["--model", "mini", *SMALL, *steps]})


@pytest.fixture
def runs(trained, home) -> Path:
    shutil.copytree(trained / "runs", home / "runs")
    shutil.copytree(trained / "corpus", home / "corpus")
    return home / "runs"


def test_a_bpe_run_stores_the_tokenizer_it_learned_from_the_train_split(runs):
    stored = record.read_record("b")
    assert stored.tokenizer == "bpe" and "tokenizer" in stored.files and stored.hyper["bpe_vocab"] == 120
    text = corpus.load().text
    expected = tokens.BPETokenizer.train(text[: corpus.split_point(len(text))], 120, alphabet=text)
    learned = tokens.of_run("b")
    assert learned.merges == expected.merges and learned.vocab_size == stored.model["vocab_size"] == 120
    val = text[corpus.split_point(len(text)):]
    assert stored.chars_per_token[1] == pytest.approx(len(val) / len(expected.encode(val))) and \
        stored.chars_per_token[1] > 1.2
    assert record.read_record("c").tokenizer == "char" and "tokenizer" not in record.read_record("c").files


def test_resume_goes_on_with_the_stored_tokenizer_and_refuses_another(runs):
    before = on_disk("b")["files"]["tokenizer"]
    cli("train", "--run", "b", "--resume", "--max-iters", "24")
    assert record.read_record("b").step == 24 and on_disk("b")["files"]["tokenizer"] == before
    assert_one_line_error(cli("train", "--run", "b", "--resume", "--tokenizer", "char", code=2),
                          "was trained with tokenizer bpe")
    assert_one_line_error(cli("train", "--run", "c", "--resume", "--tokenizer", "bpe", code=2),
                          "was trained with tokenizer char")


def test_an_edited_tokenizer_file_is_refused_in_one_line(runs):
    path = runs / "b" / on_disk("b")["files"]["tokenizer"]
    path.write_bytes(path.read_bytes().replace(b'"bpe"', b'"BPE"'))
    for args in (["eval", "b"], ["inspect", "tokens", "b"], ["chat", "-r", "b", "-p", "To"]):
        assert_one_line_error(cli(*args, code=2), "corrupt or truncated")


@pytest.mark.parametrize(("args", "words"), [
    (["--model", "bigram", "--tokenizer", "bpe"], ["bigram", "a BPE needs a stage with attention"]),
    (["--vocab-size", "300"], ["--tokenizer bpe"]),
    (["--model", "mini", "--tokenizer", "bpe", "--vocab-size", "40"], ["below the corpus's 65 characters"]),
    (["--model", "mini", "--tokenizer", "bpe", "--vocab-size", "99999999"], ["absurdly large"]),
    (["--tokenizer", "wordpiece"], ["unknown tokenizer 'wordpiece'"]),
])
def test_bad_tokenizer_choices_are_one_line_and_write_nothing(cached, home, args, words):
    assert_one_line_error(cli("train", "--run", "x", *args, *SMALL, code=2), *words)
    assert not (home / "runs" / "x").exists()


def test_eval_scores_bpe_tokens_and_reports_bits_per_character_of_the_characters_covered(runs):
    out = cli("eval", "b").stdout
    match = re.search(r"full val loss (\d\.\d{4}) \((\d\.\d{4}) bits/char\) over ([\d,]+) positions "
                      r"\(([\d,]+) characters\)", out)
    assert match, out
    loss, bits, positions, chars = float(match[1]), float(match[2]), *(int(g.replace(",", "")) for g in match.group(3, 4))
    val = corpus.load().split_text("val")
    assert chars == len(val) - len(tokens.of_run("b").decode(tokens.of_run("b").encode(val)[:1]))  # all but the first
    assert bits == pytest.approx(loss * positions / chars / math.log(2), abs=2e-4)
    char_out = cli("eval", "c").stdout
    assert "characters)" not in char_out and "positions of corpus" in char_out


def test_chat_streams_tokens_and_probs_lists_each_token(runs):
    plain = cli("chat", "-r", "b", "-p", "ROMEO:", "--max-new-tokens", "12", "--seed", "3", "--stop", "").stdout
    lines = cli("chat", "-r", "b", "-p", "ROMEO:", "--max-new-tokens", "12", "--seed", "3", "--stop", "",
                "--probs").stdout.splitlines()
    assert len(lines) == 12  # one line per token, not per character
    texts = [line.rsplit("\t", 1)[0].replace("\\n", "\n") for line in lines]
    assert "".join(texts) + "\n" == plain and all(t in tokens.of_run("b").tokens for t in texts)
    assert len(plain) > 12  # several characters a token


def test_inspect_labels_tokens_of_a_bpe_run(runs):
    tokenizer = tokens.of_run("b")
    out = cli("inspect", "tokens", "b", "--text", "To be, or not to be").stdout.splitlines()
    assert out[2] == "|".join(tokens.pieces(tokenizer, "To be, or not to be"))
    assert out[-1].startswith("19 characters in ") and "1.00" not in out[-1]
    data = json.loads(cli("inspect", "attention", "b", "--prompt", "To be, or not", "--json").stdout)
    assert data["tokens"] == tokens.pieces(tokenizer, "To be, or not")[-8:]
    after = json.loads(cli("inspect", "next", "b", "--prompt", "To be", "--json").stdout)
    assert len(after["next"]) == 120 and {row["char"] for row in after["next"]} == set(tokenizer.tokens)
    assert "the next token after" in cli("inspect", "next", "b", "--prompt", "To be").stdout


def test_runs_stages_and_plot_show_bits_per_character(runs):
    b, c = record.read_record("b"), record.read_record("c")
    listing = {table_cells(line)[0]: table_cells(line) for line in cli("runs").stdout.splitlines()}
    for run in (b, c):
        assert listing[run.name][5] == f"{run.best_val / run.chars_per_token[1] / math.log(2):.4f}"
    shown = cli("runs", "show", "b").stdout
    assert re.search(r"^tokenizer\s+bpe, \d\.\d\d characters a token in val$", shown, re.M)
    assert f"({b.bits_per_char(b.best_val):.4f} bits/char; " in shown  # then why its estimate is not comparable
    chart = cli("plot", "b", "c", "--axis", "bpc").stdout
    assert chart.splitlines()[0] == "val bits per character"
    tops = [max(run.bits_per_char(e.val) for e in run.evaluations()) for run in (b, c)]
    assert float(chart.splitlines()[1].split("┤")[0]) == pytest.approx(max(tops), abs=0.005)
    assert_one_line_error(cli("plot", "b", "--axis", "nats", code=2), "unknown axis 'nats'")
    best = min((b, c), key=lambda r: r.bits_per_char(r.best_val))
    row = next(table_cells(line) for line in cli("stages").stdout.splitlines() if line.startswith("mini "))
    assert row[-2:] == [f"{best.bits_per_char(best.best_val):.4f}", best.name]


def test_a_ladder_on_bpe_tokens_leaves_out_the_bigram_and_reports_bits_per_character(cached, home):
    assert ladder.check_stages([], "bpe")[0] == "head" and ladder.check_stages([])[0] == "bigram"
    out = cli("ladder", "head", "mini-bpe", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "2",
              "--device", "cpu").stdout.splitlines()
    assert [line.split(":")[0] for line in out] == ["head", "mini-bpe"]
    assert record.read_record("ladder-mini-bpe").tokenizer == "bpe" and tokens.of_run("ladder-mini-bpe").vocab_size == 512
    again = cli("ladder", "mini-bpe", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "2",
                "--device", "cpu").stdout  # reused: read in its own tokens
    assert ", reused |" in again and again.split(" bits/char")[0] == out[1].split(" bits/char")[0]


def test_a_corpus_of_your_own_trains_a_bpe(home, tmp_path):
    text = tmp_path / "mine.txt"
    text.write_text("the cat sat on the mat. " * 400 + "a dog sat on the log. " * 100, encoding="utf-8")
    cli("fetch", "--from", str(text), "--corpus", "mine")
    cli("train", "--run", "m", "--corpus", "mine", "--model", "mini", "--tokenizer", "bpe", "--vocab-size", "30",
        *SMALL, "--max-iters", "4", "--eval-interval", "2")
    learned = tokens.of_run("m")
    assert learned.chars == sorted(set(text.read_text())) and " the" in learned.tokens
    assert checkpoint.load("m").tokenizer.tokens == learned.tokens
