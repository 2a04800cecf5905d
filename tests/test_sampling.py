"""tinyshake.sampling: the KV cache against a no-cache oracle, the overflow modes, the filters and stop strings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from tinyshake import sampling
from tinyshake.models import speed
from tinyshake.errors import UsageError
from tinyshake.models.model import ModelConfig, build
from tinyshake.models.speed import KVCache
from tinyshake.sampling import SamplingSettings, StopMatcher, TextStream, generate, pick

BLOCK = 16
GPT = dict(vocab_size=65, block_size=BLOCK, n_embd=32, n_head=4, n_layer=2, ffwd="wide", proj=True, residual=True,
           layernorm=True)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A small untrained GPT; weights of N(0, 0.3) give peaked, varied next-character distributions."""
    torch.manual_seed(0)
    return speed.apply(build(ModelConfig(**GPT, init_std=0.3))).eval()


def sample(model: torch.nn.Module, context: list[int], seed: int, **settings) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return list(generate(model, context, SamplingSettings(**settings), generator))


def oracle(model: torch.nn.Module, context: list[int], n: int, seed: int, refill: bool = False,
           temperature: float = 1.0) -> list[int]:
    """No cache at all: every step runs the model on its whole window from scratch.

    The window is the last ``block_size`` ids (the lecture's crop) or, with
    ``refill``, starts over at the last half block whenever it outgrows a block.
    """
    generator = torch.Generator().manual_seed(seed)
    ids, start = list(context), max(0, len(context) - BLOCK)
    for _ in range(n):
        if refill and len(ids) - start > BLOCK:
            start = len(ids) - BLOCK // 2
        window = ids[start:] if refill else ids[-BLOCK:]
        with torch.no_grad():
            logits = model(torch.tensor([window]))[0][:, -1, :] / temperature
        ids.append(int(torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)))
    return ids[len(context):]


# -- the KV cache ---------------------------------------------------------------------------


def test_cached_steps_give_the_full_forward_logits(model):
    ids = torch.randint(0, 65, (1, BLOCK), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)[0]
        cache = KVCache(len(model.blocks))
        prefill = speed.forward_cached(model, ids[:, :5], cache)
        steps = [speed.forward_cached(model, ids[:, t : t + 1], cache) for t in range(5, BLOCK)]
    assert torch.allclose(torch.cat([prefill, *steps], dim=1), full, atol=1e-5)
    assert cache.pos == BLOCK


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("context", [[0], [5, 9, 20]], ids=["token0", "three"])
def test_cache_and_no_cache_sample_the_same_text_within_the_block(model, seed, context):
    n = BLOCK - len(context)
    cached = sample(model, context, seed, max_new_tokens=n, use_cache=True)
    assert cached == sample(model, context, seed, max_new_tokens=n, use_cache=False)
    assert cached == oracle(model, context, n, seed)
    assert len(set(cached)) > 3  # really sampled, not one character over and over


@pytest.mark.parametrize("seed", [1, 2])
def test_crop_is_the_lectures_semantics_beyond_the_block(model, seed):
    n = 4 * BLOCK
    cropped = sample(model, [0], seed, max_new_tokens=n, overflow="crop")
    assert cropped == sample(model, [0], seed, max_new_tokens=n, use_cache=False)
    assert cropped == oracle(model, [0], n, seed)


@pytest.mark.parametrize("context", [[0], list(range(40))], ids=["token0", "longer-than-block"])
def test_refill_restarts_from_the_last_half_block(model, context):
    n = 4 * BLOCK
    refilled = sample(model, context, 7, max_new_tokens=n, overflow="refill")
    assert refilled == oracle(model, context, n, 7, refill=True)
    same = max(1, BLOCK - len(context) + 1)  # until the window first overflows, it is the plain window
    assert refilled[:same] == oracle(model, context, n, 7)[:same]
    assert refilled != oracle(model, context, n, 7)  # beyond the block it is another (faster) semantics


@pytest.mark.skipif("pos" not in {f.name for f in dataclasses.fields(ModelConfig)}, reason="no rotary positions")
def test_a_rotary_model_slides_its_cache_past_the_block():
    """With rotary positions and one layer, attention depends only on distances, so sliding is exact."""
    torch.manual_seed(0)
    rope = speed.apply(build(ModelConfig(**dict(GPT, n_layer=1), init_std=0.3, pos="rope"))).eval()
    n = 4 * BLOCK
    reference = sample(rope, [0], 3, max_new_tokens=n, use_cache=False)
    assert sample(rope, [0], 3, max_new_tokens=n, overflow="refill") == reference
    assert sample(rope, [0], 3, max_new_tokens=n, overflow="crop") == reference


def test_the_lectures_generate_is_reproduced_from_the_global_seed(model):
    """At temperature 1 with the global random stream, generate is the lecture's loop, draw for draw."""
    torch.manual_seed(1337)
    idx = torch.zeros((1, 1), dtype=torch.long)
    for _ in range(3 * BLOCK):  # the lecture's GPTLanguageModel.generate
        logits, _ = model(idx[:, -BLOCK:])
        probs = F.softmax(logits[:, -1, :], dim=-1)
        idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    for use_cache in (True, False):
        torch.manual_seed(1337)
        settings = SamplingSettings(max_new_tokens=3 * BLOCK, use_cache=use_cache, overflow="crop")
        assert list(generate(model, [], settings)) == idx[0, 1:].tolist()


def test_bigram_samples_with_and_without_cache():
    torch.manual_seed(0)
    bigram = build(ModelConfig(vocab_size=65, block_size=8, arch="bigram"))
    for overflow in sampling.OVERFLOW_MODES:
        assert sample(bigram, [3], 4, max_new_tokens=30, overflow=overflow) == \
            sample(bigram, [3], 4, max_new_tokens=30, use_cache=False)


# -- picking the next character ----------------------------------------------------------------


def test_temperature_zero_is_greedy_and_draws_no_random_number(model):
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    greedy = list(generate(model, [1, 2], SamplingSettings(temperature=0, max_new_tokens=3 * BLOCK, overflow="crop"),
                           generator))
    ids = [1, 2]
    for _ in range(3 * BLOCK):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids[-BLOCK:]]))[0][0, -1].argmax()))
    assert greedy == ids[2:]
    assert torch.equal(generator.get_state(), state)


def draws(logits: list[float], n: int = 400, **settings) -> set[int]:
    generator = torch.Generator().manual_seed(0)
    batch = torch.tensor([logits])
    return {int(pick(batch, SamplingSettings(**settings), generator)) for _ in range(n)}


def test_top_k_keeps_only_the_k_likeliest():
    logits = [0.0, 3.0, 1.0, 2.5, -1.0, 2.0]
    assert draws(logits) == set(range(6))
    assert draws(logits, top_k=3) == {1, 3, 5}
    assert draws(logits, top_k=1) == {1}


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().tolist()
    assert draws(logits, top_p=0.5) == {0}
    assert draws(logits, top_p=0.6) == {0, 1}
    assert draws(logits, top_p=0.9) == {0, 1, 2}
    assert draws(logits, top_p=1.0) == {0, 1, 2, 3}


def test_low_temperature_sharpens_and_high_flattens():
    logits = [2.0, 0.0, 0.0, 0.0]
    assert draws(logits, temperature=0.05) == {0}
    assert draws(logits, temperature=100.0) == {0, 1, 2, 3}


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=0), dict(top_p=0), dict(top_p=1.5),
                                 dict(max_new_tokens=-1), dict(overflow="wrap"), dict(temperature=float("nan"))])
def test_invalid_settings_are_usage_errors(bad):
    with pytest.raises(UsageError):
        SamplingSettings(**bad).validate()


def test_seeded_generators_repeat_and_unseeded_ones_get_a_fresh_seed(model):
    (a, seed_a), (b, _) = sampling.make_generator("cpu", 42), sampling.make_generator("cpu", 42)
    assert seed_a == 42
    assert torch.equal(torch.rand(8, generator=a), torch.rand(8, generator=b))
    seeds = {sampling.make_generator("cpu")[1] for _ in range(5)}
    assert len(seeds) > 1


def test_empty_context_starts_from_token_zero_and_zero_tokens_yield_nothing(model):
    assert sample(model, [], 3, max_new_tokens=20) == sample(model, [0], 3, max_new_tokens=20)
    assert sample(model, [4], 3, max_new_tokens=0) == []


def test_training_mode_comes_back_even_when_the_stream_is_closed_early(model):
    model.train()
    try:
        tokens = generate(model, [0], SamplingSettings(max_new_tokens=50))
        next(tokens)
        assert not model.training
        tokens.close()
        assert model.training
    finally:
        model.eval()


# -- stop strings and text ---------------------------------------------------------------------


def feed_all(matcher: StopMatcher, text: str) -> list[str]:
    """Feed one character at a time, as sampling does; returns what was released each time."""
    return [matcher.feed(ch) for ch in text]


def test_a_blank_line_stops_and_is_never_shown():
    matcher = StopMatcher(["\n\n"])
    released = feed_all(matcher, "Ay.\nNo\n\nMore")
    assert "".join(released) == "Ay.\nNo"
    assert released[3] == "" and released[4] == "\nN"  # the newline waited one character, then went out
    assert matcher.stopped == "\n\n"


def test_partial_stop_strings_are_released_or_flushed():
    matcher = StopMatcher(["ROMEO:"])
    assert "".join(feed_all(matcher, "ROMANS ROM")) == "ROMANS "
    assert matcher.stopped is None
    assert matcher.flush() == "ROM"


def test_the_earliest_of_several_stops_wins_and_empty_stops_are_ignored():
    matcher = StopMatcher(["", "bc", "abcd"])
    assert "".join(feed_all(matcher, "xabc")) == "xa"
    assert matcher.stopped == "bc"
    assert "".join(feed_all(StopMatcher([""]), "a\n\nb")) == "a\n\nb"


def test_text_stream_keeps_every_id_and_closes_the_sampler():
    closed = []

    def tokens():
        try:
            yield from [(t, None) for t in [1, 2, 0, 0, 3, 4]]
        finally:
            closed.append(True)

    chars = {0: "\n", 1: "a", 2: "b", 3: "c", 4: "d"}
    stream = TextStream(tokens(), lambda ids: "".join(chars[i] for i in ids), ["\n\n"])
    assert list(stream) == ["a", "b"]
    assert stream.ids == [1, 2, 0, 0]
    assert stream.stopped == "\n\n" and closed == [True]


def test_text_held_back_at_the_end_of_a_stream_is_shown():
    stream = TextStream(((t, None) for t in [1, 0]), lambda ids: "a" if ids == [1] else "\n", ["\n\n"])
    assert list(stream) == ["a", "\n"] and stream.stopped is None


def test_stream_text_decodes_what_generate_samples(model):
    decode = lambda ids: "".join(chr(65 + i) if i < 26 else "." for i in ids)  # noqa: E731
    settings = SamplingSettings(max_new_tokens=40)
    stream = sampling.stream_text(model, [0], settings, decode, generator=torch.Generator().manual_seed(9))
    assert "".join(stream) == decode(sample(model, [0], 9, max_new_tokens=40))
    assert len(stream.ids) == 40 and stream.stopped is None


def test_small_models_sample_on_one_cpu_thread_and_the_count_comes_back(model):
    big = build(ModelConfig(vocab_size=65, block_size=8, n_embd=512, n_head=4, n_layer=1, ffwd="wide"))
    assert sampling.cpu_threads(model) == 1
    assert 1 <= sampling.cpu_threads(big) <= min(sampling.CPU_THREADS, torch.get_num_threads())
    torch.set_num_threads(2)
    with sampling.sampling_threads(model, torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_temperatures_too_small_to_divide_by_act_as_greedy(model):
    """1e-45 overflowed the logits to inf and the sampler died on NaNs; now it is the argmax."""
    greedy = sample(model, [1, 2], 5, temperature=0, max_new_tokens=20)
    assert sample(model, [1, 2], 5, temperature=1e-45, max_new_tokens=20) == greedy
    assert sample(model, [1, 2], 5, temperature=sampling.GREEDY_BELOW / 2, max_new_tokens=20) == greedy


@pytest.mark.parametrize("bad", [float("inf"), float("-inf")])
def test_non_finite_temperatures_are_refused(bad):
    with pytest.raises(UsageError, match="finite"):
        SamplingSettings(temperature=bad).validate()


def test_the_stream_records_the_models_probability_of_each_id_only_when_asked(model):
    settings = SamplingSettings(max_new_tokens=12, temperature=0.7, top_k=5)
    asked = sampling.stream_text(model, [3], settings, str, generator=torch.Generator().manual_seed(2), with_probs=True)
    list(asked)
    plain = sampling.stream_text(model, [3], settings, str, generator=torch.Generator().manual_seed(2))
    list(plain)
    assert asked.ids == plain.ids and plain.probs == [] and len(asked.probs) == 12
    context = [3]
    for token, p in zip(asked.ids, asked.probs):
        with torch.no_grad():
            logits = model(torch.tensor([context[-BLOCK:]]))[0][0, -1]
        assert p == pytest.approx(float(F.softmax(logits, dim=-1)[token]), abs=1e-6)  # before temperature, top-k
        context.append(token)


def test_a_stream_of_several_character_tokens_says_which_characters_came_from_which_token():
    texts = ["To", " be", ",", " or", "\n\n", " not"]
    stream = TextStream(((i, p) for i, p in enumerate([0.9, 0.5, 0.25, 0.125, 0.7, 0.3])),
                        lambda ids: "".join(texts[i] for i in ids), ["\n\n"])
    assert "".join(stream) == "To be, or" and stream.stopped == "\n\n"
    assert stream.text == "To be, or\n\n" and stream.ids == [0, 1, 2, 3, 4]
    assert stream.spans(0, 9) == [("To", 0.9), (" be", 0.5), (",", 0.25), (" or", 0.125)]
    assert stream.spans(4, 8) == [("e", 0.5), (",", 0.25), (" o", 0.125)]  # a piece may start inside a token
