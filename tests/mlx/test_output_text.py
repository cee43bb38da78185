"""The per-choice text pipeline, part 1: text, stop strings and reasoning."""

from __future__ import annotations

import random

import pytest
from mlx_lm.tokenizer_utils import (
    TokenizerWrapper,
)

from backends.mlx.output import ChoiceOutput, TokenStep
from backends.mlx.output_scan import held_prefix_len
from backends.mlx.output_text import token_table
from gateway.backend import GenerationChunk, ToolCallDelta
from tests.mlx.output_support import *

# --- detokenization -----------------------------------------------------------------


MIXED = "Hello wörld! 你好, café 😀 done.\n\tdef f(x):\n  return 'ünï'"


@pytest.mark.parametrize("fixture", ["tok", "naive"])
def test_streamed_text_equals_decode_and_never_shows_a_split_character(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    tokenizer = request.getfixturevalue(fixture)
    tokens = ids(tokenizer, MIXED)
    chunks = run(ChoiceOutput(tokenizer), tokens)
    assert text(chunks) == MIXED == tokenizer.decode(tokens)
    assert all("\ufffd" not in c.text for c in chunks)
    assert len(tokens) > len(chunks) > 1  # split characters wait for their last byte


def test_character_split_over_tokens_waits_for_its_last_byte(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "你")
    assert len(tokens) == 3  # one token per byte in this small vocabulary
    output = ChoiceOutput(tok)
    assert output.feed(TokenStep(tokens[0])) is None
    assert output.feed(TokenStep(tokens[1])) is None
    assert output.feed(TokenStep(tokens[2])) == GenerationChunk(text="你")


def test_incomplete_character_at_the_end_becomes_a_replacement(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok)
    assert output.feed(TokenStep(ids(tok, "你")[0])) is None
    assert output.finish("length") == GenerationChunk(text="\ufffd", finish_reason="length")


@pytest.mark.parametrize("sample", ["Hello", " Hello world", "  two spaces", " ", "a\n b"])
@pytest.mark.parametrize("fixture", ["tok", "naive"])
def test_text_matches_the_wrappers_own_detokenizer(
    fixture: str, sample: str, request: pytest.FixtureRequest
) -> None:
    """Including the BPE detokenizer's rule: one leading space of the output is dropped."""
    tokenizer = request.getfixturevalue(fixture)
    tokens = ids(tokenizer, sample)
    detokenizer = tokenizer.detokenizer
    for token in tokens:
        detokenizer.add_token(token)
    detokenizer.finalize()
    assert text(run(ChoiceOutput(tokenizer), tokens)) == detokenizer.text


def test_token_table_probes_a_plain_wrapper_and_caches_per_tokenizer(naive: TokenizerWrapper) -> None:
    table = token_table(naive)
    assert table is token_table(naive)
    assert not table.trim_leading_space  # HF decode keeps the leading space
    assert table.bytes_of(ids(naive, " world")[0]).startswith(b" ")
    assert table.bytes_of(10**9) == b""


# --- stop strings -------------------------------------------------------------------


def test_stop_string_spanning_tokens_is_held_then_dropped(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, stop=["world"])
    assert shown(output, tok, ["Hello", " wo", "rld", "!"]) == ["Hello", " ", ""]  # "wo" was held
    assert output.stopped
    assert output.feed(TokenStep(ids(tok, "!")[0])) is None  # ignored after the stop
    assert output.finish("stop") == GenerationChunk(finish_reason="stop", stop_sequence="world")
    assert output.completion_tokens == len(ids(tok, "Hello", " wo", "rld"))


def test_held_prefix_is_released_when_the_stop_does_not_complete(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, stop=["worldwide"])
    assert shown(output, tok, ["Hello", " world", "!", " Bye"]) == ["Hello", " ", "world!", " Bye"]
    assert output.finish("stop") == GenerationChunk(finish_reason="stop")


def test_held_prefix_is_released_at_the_end(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, stop=["Byebye"])
    assert shown(output, tok, ["Hi", " Bye"]) == ["Hi", " "]
    assert output.finish("length") == GenerationChunk(text="Bye", finish_reason="length")


def test_stop_inside_one_token_keeps_the_text_before_it(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok, stop=["is a", "."]), ids(tok, "Hello world, this is a test."))
    assert text(chunks) == "Hello world, this "
    assert (chunks[-1].finish_reason, chunks[-1].stop_sequence) == ("stop", "is a")


def test_stop_found_in_the_text_flushed_at_the_end(tok: TokenizerWrapper) -> None:
    """A tail held as a possible marker turns out to be content, and holds a stop string."""
    chunks = run(ChoiceOutput(tok, stop=["<th"]), ids(tok, "ok <th"), reason="length")
    assert text(chunks) == "ok "
    assert (chunks[-1].finish_reason, chunks[-1].stop_sequence) == ("stop", "<th")


def test_stop_strings_are_not_searched_in_reasoning_or_tool_calls(tok: TokenizerWrapper) -> None:
    body = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    tokens = ids(
        tok, "<think>", "the Paris END", "</think>", "Answer", "<tool_call>", body, "</tool_call>", "Paris"
    )
    chunks = run(ChoiceOutput(tok, stop=["Paris"], parse_tools=True), tokens)
    assert reasoning(chunks) == "the Paris END"
    assert text(chunks) == "Answer"
    assert no_ids(deltas(chunks)) == [
        ToolCallDelta(0, "ID", "get_weather"),
        ToolCallDelta(0, arguments='{"city": "Paris"}'),
    ]
    assert chunks[-1].finish_reason == "tool_calls"


def random_text(rng: random.Random) -> str:
    return "".join(
        rng.choice(["a", "b", "ab", "ba", " ", "\n", "é", "你", "."]) for _ in range(rng.randint(0, 30))
    )


def test_streaming_with_stops_equals_the_whole_text_cut_at_the_first_stop(tok: TokenizerWrapper) -> None:
    """Text flows as soon as it cannot begin a stop string; nothing of a stop string shows."""
    rng = random.Random(7)
    for _ in range(300):
        sample, stops = "x" + random_text(rng), [random_text(rng)[:4] for _ in range(rng.randint(1, 3))]
        stops = [s for s in stops if s] or ["ab"]
        tokens = ids(tok, sample)
        full = tok.decode(tokens)
        cuts = [full.find(s) for s in stops if s in full]
        expected = full[: min(cuts)] if cuts else full
        output = ChoiceOutput(tok, stop=stops)
        shown = ""
        for k, token in enumerate(tokens):
            chunk = output.feed(TokenStep(token))
            shown += chunk.text if chunk else ""
            if output.stopped:
                break
            decoded = tok.decode(tokens[: k + 1]).rstrip("\ufffd")
            assert shown == decoded[: len(decoded) - held_prefix_len(decoded, stops)]
        shown += output.finish("stop").text
        assert shown == expected, (sample, stops)
        assert output.stopped == bool(cuts)


# --- reasoning ----------------------------------------------------------------------


def test_reasoning_goes_to_its_own_field_without_markers(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "<think>", "\nLet me think.\n", "</think>", "\n\nThe answer is 42.")
    output = ChoiceOutput(tok)
    chunks = run(output, tokens)
    assert reasoning(chunks) == "Let me think."
    assert text(chunks) == "The answer is 42."
    assert all(not (c.text and c.reasoning) for c in chunks)
    assert output.reasoning_tokens == len(ids(tok, "<think>", "\nLet me think.\n", "</think>"))
    assert output.completion_tokens == len(tokens)


def test_reasoning_streams_as_it_comes(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok)
    assert output.feed(TokenStep(ids(tok, "<think>")[0])) is None
    assert output.feed(TokenStep(ids(tok, "Hello")[0])) == GenerationChunk(reasoning="Hello")


def test_in_reasoning_starts_inside_an_open_block(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, in_reasoning=True)
    chunks = run(output, ids(tok, "\nhmm", " ok", "</think>", "Hi"))
    assert (reasoning(chunks), text(chunks)) == ("hmm ok", "Hi")
    assert output.reasoning_tokens == len(ids(tok, "\nhmm", " ok", "</think>"))


def test_parse_reasoning_off_leaves_markers_as_text(tok: TokenizerWrapper) -> None:
    output = ChoiceOutput(tok, parse_reasoning=False)
    chunks = run(output, ids(tok, "<think>", "hmm", "</think>", "Hi"))
    assert (reasoning(chunks), text(chunks), output.reasoning_tokens) == ("", "<think>hmm</think>Hi", 0)


def test_marker_written_over_several_tokens_is_found(tok: TokenizerWrapper) -> None:
    tokens = ids(tok, "<th", "ink>", "hmm", "</th", "ink>", "Hi")
    assert len(tokens) > 6  # the marker really is split into plain tokens
    chunks = run(ChoiceOutput(tok), tokens)
    assert (reasoning(chunks), text(chunks)) == ("hmm", "Hi")


def test_unclosed_reasoning_is_flushed_at_length(tok: TokenizerWrapper) -> None:
    chunks = run(ChoiceOutput(tok), ids(tok, "<think>", "hmm </th"), reason="length")
    assert (reasoning(chunks), text(chunks), chunks[-1].finish_reason) == ("hmm </th", "", "length")


def test_stray_end_marker_is_removed(tok: TokenizerWrapper) -> None:
    assert text(run(ChoiceOutput(tok), ids(tok, "Hi", "</think>", " there"))) == "Hi there"
