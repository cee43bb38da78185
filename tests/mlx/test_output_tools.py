"""The per-choice text pipeline, part 2: tool calls, logprobs, the wire, other tokenizers."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from mlx_lm.tokenizer_utils import (
    NaiveStreamingDetokenizer,
    SPMStreamingDetokenizer,
    TokenizerWrapper,
)
from mlx_lm.tool_parsers import json_tools, mistral
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from backends.mlx.output import ChoiceOutput, TokenStep, make_call_id
from backends.mlx.output_scan import held_prefix_len
from backends.mlx.output_text import token_table
from backends.mlx.output_tools import parse_calls
from gateway.backend import GenerationChunk, ToolCallDelta
from tests.mlx.output_support import *

# --- tool calls ---------------------------------------------------------------------

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"zone": "CET"}}'
CALL_WEATHER = [ToolCallDelta(0, "ID", "get_weather"), ToolCallDelta(0, arguments='{"city": "Paris"}')]


def call(body: str) -> list[str]:
    return ["<tool_call>", "\n" + body + "\n", "</tool_call>"]


def test_tool_call_becomes_deltas_and_no_markup_leaks(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True)
    chunks = run(output, ids(tok, *call(WEATHER)))
    assert no_ids(deltas(chunks)) == CALL_WEATHER
    assert text(chunks) == ""
    assert chunks[-1].finish_reason == "tool_calls"
    assert output.tool_calls == ["get_weather"]
    assert json.loads(deltas(chunks)[1].arguments) == {"city": "Paris"}


def test_in_tool_call_starts_inside_a_call_the_prompt_opened(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True, in_tool_call=True)
    chunks = run(output, ids(tok, *call(WEATHER)[1:], "\n", *call(TIME)))
    assert [delta.name for delta in deltas(chunks) if delta.name] == ["get_weather", "get_time"]
    assert (text(chunks), chunks[-1].finish_reason) == ("", "tool_calls")
    ignored = ChoiceOutput(tok, parse_tools=False, in_tool_call=True)  # no tool parsing: plain text
    assert text(run(ignored, ids(tok, WEATHER))) == WEATHER


def test_parallel_calls_get_indices_and_unique_ids_with_no_stray_whitespace(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True)
    chunks = run(output, ids(tok, "Let me check.\n\n", *call(WEATHER), "\n", *call(TIME), "\n"))
    assert text(chunks) == "Let me check."
    assert all(not c.text for c in chunks if c.tool_calls)
    found = deltas(chunks)
    assert no_ids(found) == CALL_WEATHER + [
        ToolCallDelta(1, "ID", "get_time"),
        ToolCallDelta(1, arguments='{"zone": "CET"}'),
    ]
    assert found[0].id != found[2].id
    assert output.tool_calls == ["get_weather", "get_time"]
    assert chunks[-1].finish_reason == "tool_calls"


def test_parallel_tool_calls_off_keeps_only_the_first(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True, parallel_tool_calls=False)
    chunks = run(output, ids(tok, *call(WEATHER), "\n", *call(TIME), "\nDone"))
    assert no_ids(deltas(chunks)) == CALL_WEATHER
    assert output.tool_calls == ["get_weather"]
    assert text(chunks) == "Done"


def test_malformed_call_is_emitted_as_text(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True)
    chunks = run(output, ids(tok, *call('{"name": oops}')))
    assert text(chunks) == '<tool_call>\n{"name": oops}\n</tool_call>'
    assert (deltas(chunks), output.tool_calls, chunks[-1].finish_reason) == ([], [], "stop")


def test_call_cut_by_length_is_emitted_as_text(tok: TokenizerWrapper) -> None:
    chunks = run(
        ChoiceOutput(tok, parse_tools=True), ids(tok, "<tool_call>", '\n{"name": "get_w'), reason="length"
    )
    assert text(chunks) == '<tool_call>\n{"name": "get_w'
    assert chunks[-1].finish_reason == "length"


def test_length_after_a_complete_call_stays_length(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok, parse_tools=True), ids(tok, *call(WEATHER), "\nMore"), reason="length")
    assert no_ids(deltas(chunks)) == CALL_WEATHER
    assert (text(chunks), chunks[-1].finish_reason) == ("More", "length")


def test_tools_off_leaves_markup_as_text(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok), ids(tok, *call(WEATHER)))
    assert text(chunks) == "".join(call(WEATHER))
    assert chunks[-1].finish_reason == "stop"


def test_call_inside_reasoning_ends_the_reasoning(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok, parse_tools=True), ids(tok, "<think>", "use a tool\n", *call(WEATHER)))
    assert reasoning(chunks) == "use a tool"
    assert no_ids(deltas(chunks)) == CALL_WEATHER


def test_parser_gets_the_request_tools(hf: PreTrainedTokenizerFast) -> None:
    seen = []

    def parser(body: str, tools: Any) -> dict[str, Any]:
        seen.append((body, tools))
        return {"name": "f", "arguments": {"n": 1}}

    tools = [{"type": "function", "function": {"name": "f"}}]
    chunks = run(
        ChoiceOutput(wrap(hf, tool_parser=parser), parse_tools=True, tools=tools), ids(hf, *call("f(1)"))
    )
    assert seen == [("\nf(1)\n", tools)]
    assert no_ids(deltas(chunks)) == [ToolCallDelta(0, "ID", "f"), ToolCallDelta(0, arguments='{"n": 1}')]


def test_marker_without_end_marker_runs_to_the_end(hf: PreTrainedTokenizerFast) -> None:
    """Mistral style: `[TOOL_CALLS]` (here several plain tokens) and no end marker."""
    tokenizer = wrap(
        hf, tool_parser=mistral.parse_tool_call, tool_call_start="[TOOL_CALLS]", tool_call_end=""
    )
    tokens = ids(hf, "Sure.", "[TOOL_CALLS]", 'get_weather[ARGS]{"city": "Paris"}')
    chunks = run(ChoiceOutput(tokenizer, parse_tools=True), tokens)
    assert (text(chunks), no_ids(deltas(chunks)), chunks[-1].finish_reason) == (
        "Sure.",
        CALL_WEATHER,
        "tool_calls",
    )


def test_parse_calls_checks_what_the_parser_returns() -> None:
    assert parse_calls(json_tools.parse_tool_call, '{"name": "f"}') == [("f", "{}")]
    assert parse_calls(json_tools.parse_tool_call, '{"name": "f", "arguments": "{\\"a\\": 1}"}') == [
        ("f", '{"a": 1}')
    ]
    assert parse_calls(json_tools.parse_tool_call, '{"name": "f", "parameters": {"é": 1}}') == [
        ("f", '{"é": 1}')
    ]
    assert parse_calls(json_tools.parse_tool_call, '[{"name": "f"}, {"name": "g"}]') == [
        ("f", "{}"),
        ("g", "{}"),
    ]
    for bad in ['{"arguments": {}}', "[]", "42", '{"name": ""}', "not json"]:
        assert parse_calls(json_tools.parse_tool_call, bad) is None


def test_make_call_id_is_openai_shaped_and_unique() -> None:
    made = {make_call_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in made)


# --- logprobs -----------------------------------------------------------------------


def test_logprobs_cover_content_tokens_in_openai_shape(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "Hello world, café!")
    chunks = run(ChoiceOutput(tok, logprobs=True, top_logprobs=3), tokens, top=3)
    entries = [lp for c in chunks for lp in c.logprobs or []]
    assert [lp.logprob for lp in entries] == [-(k + 1) / 10 for k in range(len(tokens))]
    assert bytes(b for lp in entries for b in lp.bytes or []).decode() == "Hello world, café!"
    for chunk in chunks[:-1]:  # each chunk reports exactly the tokens whose text it releases
        assert bytes(b for lp in chunk.logprobs or [] for b in lp.bytes or []).decode() == chunk.text
    for token, lp in zip(tokens, entries):
        assert [t.logprob for t in lp.top_logprobs] == sorted(
            (t.logprob for t in lp.top_logprobs), reverse=True
        )
        assert len(lp.top_logprobs) == 3
        assert (lp.top_logprobs[0].token, lp.top_logprobs[0].bytes) == (lp.token, lp.bytes)
        assert lp.bytes == list(token_table(tok).bytes_of(token))


def test_logprobs_of_a_split_character_use_escaped_bytes(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok, logprobs=True), ids(tok, "你"))
    assert [c.text for c in chunks] == ["你", ""]
    assert [(lp.token, lp.bytes) for lp in chunks[0].logprobs or []] == [
        ("\\xe4", [0xE4]),
        ("\\xbd", [0xBD]),
        ("\\xa0", [0xA0]),
    ]


def test_logprobs_skip_stop_strings_reasoning_and_tool_calls(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "<think>", "hmm", "</think>", "\n\n", "Hi", *call(WEATHER), "Bye", " END", " x")
    chunks = run(ChoiceOutput(tok, logprobs=True, parse_tools=True, stop=[" END"]), tokens)
    assert logprob_tokens(chunks) == tok.convert_ids_to_tokens(ids(tok, "Hi", "Bye"))  # ASCII: as spelled
    assert text(chunks) == "HiBye"


def test_logprob_of_a_held_token_comes_with_its_text(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, logprobs=True, stop=["world!"])
    a, b, c = steps(ids(tok, "Hello", " world", " x"))
    assert logprob_tokens([output.feed(a)]) == ["Hello"]  # type: ignore[list-item]
    held = output.feed(b)
    assert held is not None and (held.text, logprob_tokens([held])) == (" ", [" world"])
    released = output.feed(c)
    assert released is not None and (released.text, logprob_tokens([released])) == ("world x", [" x"])


def test_logprobs_off_gives_none_and_missing_logprob_is_an_error(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok), ids(tok, "Hello"))
    assert all(c.logprobs is None for c in chunks)
    with pytest.raises(ValueError):
        ChoiceOutput(tok, logprobs=True).feed(TokenStep(ids(tok, "Hi")[0]))


# --- finishing and the wire ---------------------------------------------------------


def test_finish_twice_is_an_error_and_feeding_after_finish_is_ignored(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, choice=2)
    assert output.finish("stop") == GenerationChunk(choice=2, finish_reason="stop")
    assert output.feed(TokenStep(ids(tok, "Hi")[0])) is None
    with pytest.raises(RuntimeError):
        output.finish("stop")


def test_chunks_encode_to_openai_like_json(tok: TokenizerWrapper) -> None:
    chunks = run(
        ChoiceOutput(tok, parse_tools=True, logprobs=True, choice=1), ids(tok, *call(WEATHER)), top=1
    )
    wire = [json.loads(msgspec.json.encode(c)) for c in chunks]
    assert wire[0]["choice"] == 1
    assert wire[0]["tool_calls"][0].keys() == {"index", "id", "name"}
    assert wire[0]["tool_calls"][1] == {"index": 0, "arguments": '{"city": "Paris"}'}
    assert "logprobs" not in wire[0]  # tool-call tokens have no content logprobs


def test_with_a_checkpoint_loaded_by_mlx_lm(tmp_path: Any) -> None:
    """The wiring mlx-lm infers from a Qwen-like checkpoint: think markers, json tools, BPE detokenizer."""
    support = pytest.importorskip("tests.support.mlx_tokenizer")
    from mlx_lm.tokenizer_utils import load

    tokenizer = load(support.build_tokenizer(tmp_path, vocab_size=600))
    tokens = ids(tokenizer, "<think>", "\nhmm\n", "</think>", "\n\nSure ", "日本", *call(WEATHER))
    output = ChoiceOutput(tokenizer, parse_tools=True, logprobs=True)
    chunks = run(output, tokens)
    assert (reasoning(chunks), text(chunks), no_ids(deltas(chunks))) == ("hmm", "Sure 日本", CALL_WEATHER)
    assert chunks[-1].finish_reason == "tool_calls"
    entries = [lp for c in chunks for lp in c.logprobs or []]
    assert bytes(b for lp in entries for b in lp.bytes or []).decode() == "Sure 日本"


# --- other tokenizer families and helpers -------------------------------------------


def build_spm() -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE (Llama-2-like): `▁` for spaces, `<0xNN>` byte fallback."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    data["model"] |= {"byte_fallback": True, "unk_token": "<unk>"}
    data["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)), clean_up_tokenization_spaces=False
    )


@pytest.mark.parametrize("detokenizer", [SPMStreamingDetokenizer, NaiveStreamingDetokenizer])
def test_sentencepiece_byte_fallback(detokenizer: Any) -> None:
    tokenizer = TokenizerWrapper(build_spm(), detokenizer)
    sample = "Hello wörld 你好 😀"
    tokens = ids(tokenizer, sample)
    chunks = run(ChoiceOutput(tokenizer, logprobs=True), tokens)
    assert text(chunks) == sample == tokenizer.decode(tokens)  # leading "▁" dropped, like decode
    assert all("\ufffd" not in c.text for c in chunks)
    entries = [lp for c in chunks for lp in c.logprobs or []]
    assert entries[0].token == " Hello"  # the token as it is, with its space
    assert ("\\xe4", [0xE4]) in [(lp.token, lp.bytes) for lp in entries]


def test_held_prefix_len() -> None:
    assert held_prefix_len("Hello wor", ["world"]) == 3
    assert held_prefix_len("Hello world", ["world"]) == 0  # a whole match is not a prefix
    assert held_prefix_len("abab", ["abc", "babx"]) == 3
    assert held_prefix_len("x<", ["<think>", "</think>"]) == 1
    assert held_prefix_len("", ["a"]) == held_prefix_len("abc", ["d"]) == held_prefix_len("ab", ["b"]) == 0


def test_start_marker_inside_a_call_begins_the_next_call(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok, parse_tools=True), ids(tok, "<tool_call>", WEATHER, *call(TIME)))
    assert [(d.index, d.name) for d in deltas(chunks) if d.name] == [(0, "get_weather"), (1, "get_time")]


def test_malformed_call_does_not_take_an_index(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_tools=True)
    chunks = run(output, ids(tok, *call("oops"), *call(WEATHER)))
    assert text(chunks) == "<tool_call>\noops\n</tool_call>"
    assert no_ids(deltas(chunks)) == CALL_WEATHER
    assert chunks[-1].finish_reason == "tool_calls"


def test_logprobs_of_whitespace_before_a_call_are_dropped_with_it(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "Sure", ".\n\n", *call(WEATHER), "\n")
    chunks = run(ChoiceOutput(tok, parse_tools=True, logprobs=True), tokens)
    assert text(chunks) == "Sure."
    assert ids(tok, ".\n\n")[0] == ids(tok, ".")[0]
    assert logprob_tokens(chunks) == tok.convert_ids_to_tokens(ids(tok, "Sure", "."))


def test_malformed_call_text_has_logprobs(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, *call("oops"))
    chunks = run(ChoiceOutput(tok, parse_tools=True, logprobs=True), tokens)
    assert len(logprob_tokens(chunks)) == len(tokens)
