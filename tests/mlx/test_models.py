"""The offline test models load and behave through the real mlx-lm entry points."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlx_models import (
    CALL_PARIS,
    EOS,
    MARKUP_TOKENS,
    RUNNER_UP,
    SCENARIOS,
    ModelShape,
    Script,
    build_realistic_model,
    build_scripted_model,
    build_tokenizer,
    expected_logprobs,
    script_info,
)

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
from mlx_lm.generate import batch_generate, stream_generate
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer

SAMPLE = 'Hello wörld, café 🙂 日本 <think>x</think>\n\n<tool_call>\n{"a": [1, 2]}\n</tool_call>'


def chat_prompt(tokenizer: Any, thinking: bool = True, text: str = "Hi there!") -> list[int]:
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=thinking)


def greedy(model: Any, tokenizer: Any, prompt: list[int], max_tokens: int = 30, **kwargs: Any) -> list[Any]:
    return list(
        stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(0.0), **kwargs)
    )


# --- tokenizer ------------------------------------------------------------------------


def test_tokenizer_round_trips_and_streams_like_decode(tiny_tokenizer: Any) -> None:
    ids = tiny_tokenizer.encode(SAMPLE, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == SAMPLE
    assert isinstance(tiny_tokenizer.detokenizer, BPEStreamingDetokenizer)
    detokenizer = tiny_tokenizer.detokenizer
    for token in ids:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert detokenizer.text == SAMPLE


def test_tokenizer_markup_is_single_tokens_and_inferred_by_mlx_lm(tiny_tokenizer: Any) -> None:
    for marker in (*MARKUP_TOKENS, "<|im_start|>", EOS):
        assert len(tiny_tokenizer.encode(marker, add_special_tokens=False)) == 1, marker
    assert (tiny_tokenizer.think_start, tiny_tokenizer.think_end) == ("<think>", "</think>")
    assert (tiny_tokenizer.tool_call_start, tiny_tokenizer.tool_call_end) == ("<tool_call>", "</tool_call>")
    assert tiny_tokenizer.tool_parser.__module__ == "mlx_lm.tool_parsers.json_tools"
    assert tiny_tokenizer.eos_token_ids == {tiny_tokenizer.convert_tokens_to_ids(EOS)}
    assert tiny_tokenizer.bos_token is None
    assert len(tiny_tokenizer) == 512


def test_template_tool_call_parses_back_with_the_inferred_parser(tiny_tokenizer: Any) -> None:
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": call}],
        },
    ]
    text = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    inner = text.split("<tool_call>")[-1].split("</tool_call>")[0]
    assert tiny_tokenizer.tool_parser(inner, None) == call


def test_extra_tokens_are_single_entries_that_decode_exactly(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from tests.support.mlx_models import byte_level

    extra = [CALL_PARIS, b"\xf0\x9f", b"\x99\x82", "<think>"]
    build_tokenizer(tmp_path, vocab_size=300, extra_tokens=extra)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 303  # <think> is already a marker
    call, head, tail = (tokenizer.token_to_id(byte_level(t)) for t in extra[:3])
    assert tokenizer.decode([call]) == CALL_PARIS
    assert tokenizer.decode([head, tail]) == "🙂"
    assert "\ufffd" in tokenizer.decode([head])  # half a character on its own


def test_build_tokenizer_refuses_a_size_the_corpus_cannot_reach(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_tokenizer(tmp_path, vocab_size=200)  # below the 256-byte alphabet


# --- tiny llama -----------------------------------------------------------------------


def test_tiny_llama_loads_and_greedy_is_deterministic_to_the_limit(tiny_llama_path: Path) -> None:
    model, tokenizer, config = mlx_lm.load(str(tiny_llama_path), return_config=True)
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("llama", 64, 2)
    prompt = chat_prompt(tokenizer)
    first = [r.token for r in greedy(model, tokenizer, prompt, max_tokens=24)]
    second = [r.token for r in greedy(model, tokenizer, prompt, max_tokens=24)]
    assert first == second
    assert len(first) == 24  # EOS logit pinned to zero: greedy runs to the limit
    assert len(set(first)) > 3


def test_tiny_llama_output_moves_with_sampling_fields(tiny_llama_path: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_llama_path))
    prompt = chat_prompt(tokenizer)

    def run(seed: int, **sampling: Any) -> list[int]:
        mx.random.seed(seed)
        sampler = make_sampler(**sampling)
        return [r.token for r in stream_generate(model, tokenizer, prompt, max_tokens=16, sampler=sampler)]

    greedy_tokens = run(0, temp=0.0)
    assert run(0, temp=1.0, top_k=1) == greedy_tokens
    assert run(0, temp=1.0) == run(0, temp=1.0)
    assert run(0, temp=1.0) != greedy_tokens
    assert run(0, temp=1.0) != run(1, temp=1.0)
    assert run(0, temp=0.3) != run(0, temp=1.5)


# --- scripted models ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("thinking", [True, False])
def test_scripted_model_says_its_script_with_exact_logprobs(
    scripted_model: Callable[[str], Path], name: str, thinking: bool
) -> None:
    path = scripted_model(name)
    model, tokenizer = mlx_lm.load(str(path))
    info = script_info(path)
    expected = expected_logprobs(len(tokenizer))
    script = SCENARIOS[name]
    results = greedy(model, tokenizer, chat_prompt(tokenizer, thinking), max_tokens=25)
    want = (info["tokens"] * 25)[:25] if script.loop else info["tokens"]
    assert [r.token for r in results] == want
    one_pass = script.text.removesuffix(EOS)
    assert "".join(r.text for r in results) == (one_pass * 25 if script.loop else one_pass)
    for r in results:
        logprobs = r.logprobs.tolist()
        assert logprobs[r.token] == pytest.approx(expected.successor, abs=1e-4)
        assert logprobs[info["runner_up"]] == pytest.approx(expected.runner_up, abs=1e-4)
        others = sorted(logprobs)[:-2]
        assert others[0] == pytest.approx(expected.other, abs=1e-4)
        assert others[-1] == pytest.approx(expected.other, abs=1e-4)


def test_scripted_text_is_what_the_catalogue_says() -> None:
    assert SCENARIOS["utf8"].text == "Café au lait 🙂<|im_end|>"
    assert SCENARIOS["stop"].text == "Counting: one, two, three, four.<|im_end|>"
    assert SCENARIOS["two_tool_calls"].text.count("<tool_call>") == 2


def test_scripted_model_ignores_a_long_random_prompt(scripted_model: Callable[[str], Path]) -> None:
    path = scripted_model("two_tool_calls")
    model, tokenizer = mlx_lm.load(str(path))
    info = script_info(path)
    rng = random.Random(0)
    skip = {*info["tokens"], info["runner_up"]}
    prompt = [t for t in (rng.randrange(len(tokenizer)) for _ in range(3000)) if t not in skip]
    assert [r.token for r in greedy(model, tokenizer, prompt)] == info["tokens"]


def test_banning_the_successor_picks_the_runner_up_then_restarts(
    scripted_model: Callable[[str], Path],
) -> None:
    path = scripted_model("plain")
    model, tokenizer = mlx_lm.load(str(path))
    tokens = script_info(path)["tokens"]
    processors = make_logits_processors(logit_bias={tokens[1]: -100.0})
    results = greedy(model, tokenizer, chat_prompt(tokenizer), max_tokens=6, logits_processors=processors)
    runner = script_info(path)["runner_up"]
    assert tokenizer.decode([runner]) == RUNNER_UP
    assert [r.token for r in results] == [tokens[0], runner] * 3


def test_scripted_model_batches_prompts_of_different_lengths(scripted_model: Callable[[str], Path]) -> None:
    path = scripted_model("stop")
    model, tokenizer = mlx_lm.load(str(path))
    prompts = [chat_prompt(tokenizer, text="x" * n) for n in (1, 40, 300)]
    response = batch_generate(model, tokenizer, prompts, max_tokens=20)
    assert response.texts == [SCENARIOS["stop"].text.removesuffix(EOS)] * 3


def test_script_needing_more_context_than_one_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than one token of context"):
        build_scripted_model(tmp_path, ("A", "B", "C", "A", "B", "D", EOS))
    with pytest.raises(ValueError, match="ends with EOS"):
        build_scripted_model(tmp_path, ("A", "B"))
    with pytest.raises(ValueError, match="runner-up"):
        build_scripted_model(tmp_path, ("A", RUNNER_UP, EOS))


def test_custom_script_through_the_fixture(scripted_model: Callable[[Script], Path]) -> None:
    path = scripted_model(Script(("One", " more", EOS)))
    model, tokenizer = mlx_lm.load(str(path))
    assert "".join(r.text for r in greedy(model, tokenizer, chat_prompt(tokenizer))) == "One more"


# --- realistic model (benchmark builder) on a tiny shape ------------------------------


def test_realistic_builder_code_path_on_a_tiny_shape(tmp_path: Path) -> None:
    shape = ModelShape("qwen2", 32, 1, 64, 2, 1, 600)
    path = build_realistic_model(tmp_path, seed=3, shape=shape)
    model, tokenizer, config = mlx_lm.load(str(path), return_config=True)
    assert (config["model_type"], config["vocab_size"], len(tokenizer)) == ("qwen2", 600, 600)
    assert tokenizer.tool_parser is not None and tokenizer.think_start == "<think>"
    assert len(greedy(model, tokenizer, chat_prompt(tokenizer), max_tokens=3)) >= 1
    weights = path / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    build_realistic_model(tmp_path, seed=3, shape=shape)
    assert weights.stat().st_mtime_ns == stamp  # present and matching: not rebuilt
    build_realistic_model(tmp_path, seed=4, shape=shape)
    assert json.loads((path / "build.json").read_text())["seed"] == 4
    assert weights.stat().st_mtime_ns != stamp
