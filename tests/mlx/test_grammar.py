"""Grammars, their compiler and cache, and a row's constraint, on the test tokenizer."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llguidance")

from backends.mlx.constraint import BatchMasks, Constraint, apply_mask
from backends.mlx.grammar import (
    SCHEMA_PARAM,
    CallFormat,
    GrammarCompiler,
    ll_tokenizer,
    output_schema,
    response_format_grammar,
    tool_call_grammar,
)
from gateway.errors import InvalidRequest

ANSWER = {"type": "object", "properties": {"a": {"enum": ["yes", "no"]}}, "required": ["a"]}


@pytest.fixture(scope="module")
def compiler(tiny_tokenizer: Any) -> GrammarCompiler:
    return GrammarCompiler(ll_tokenizer(tiny_tokenizer, len(tiny_tokenizer.vocab)), capacity=2)


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def accepts(compiler: GrammarCompiler, grammar: Any, tokens: list[int]) -> bool:
    matcher = compiler.compile(grammar)
    return all(matcher.consume_token(t) for t in tokens) and matcher.is_accepting()


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "json_object", "json_schema": {}}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "t", "schema": [], "strict": True}}, SCHEMA_PARAM),
        ({"type": "json_schema", "json_schema": {"name": "t", "strict": "yes"}}, "response_format.json_schema.strict"),
        ({"type": "json_schema", "json_schema": {"name": "t", "extra": 1}}, "response_format.json_schema.extra"),
        ({"type": "json_object", "other": 1}, "response_format"),
    ],
)  # fmt: skip
def test_response_format_shape_is_checked(response_format: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        output_schema(response_format)
    assert caught.value.param == param


def test_output_schemas() -> None:
    assert output_schema(None) is None and output_schema({"type": "text"}) is None
    assert output_schema({"type": "json_object"}) == {"type": "object"}
    assert output_schema(schema_format(ANSWER)) == ANSWER


def test_json_is_written_in_one_layout(compiler: GrammarCompiler, tiny_tokenizer: Any) -> None:
    grammar = response_format_grammar(schema_format(ANSWER))
    assert accepts(compiler, grammar, encode(tiny_tokenizer, '{"a": "yes"}'))
    assert not accepts(compiler, grammar, encode(tiny_tokenizer, '{ "a":"yes"}'))
    assert not accepts(compiler, grammar, encode(tiny_tokenizer, '{"a": "maybe"}'))


def test_tool_call_grammar(compiler: GrammarCompiler, tiny_tokenizer: Any) -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {
            "$defs": {"n": {"type": "integer", "maximum": 9}},
            "type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}, "required": ["n"],
            "additionalProperties": False,
        }}},
        {"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}},
    ]  # fmt: skip
    start, end = tiny_tokenizer.tool_call_start, tiny_tokenizer.tool_call_end
    ids = [encode(tiny_tokenizer, marker)[0] for marker in (start, end)]
    fmt = CallFormat(start, end, *ids)
    call = '{"name": "f", "arguments": {"n": 3}}'
    one = tool_call_grammar(tools, "f", fmt, opened=True, parallel=False)
    assert accepts(compiler, one, encode(tiny_tokenizer, f"\n{call}\n{end}"))
    assert not accepts(compiler, one, encode(tiny_tokenizer, f"{call}{end}{start}{call}{end}"))
    assert not accepts(compiler, one, encode(tiny_tokenizer, '{"name": "f", "arguments": {"n": 12}}' + end))
    assert not accepts(compiler, one, encode(tiny_tokenizer, '{"name": "g", "arguments": {}}' + end))
    many = tool_call_grammar(tools, "*", fmt, opened=False, parallel=True)
    two = f'{start}{call}{end}\n{start}{{"name": "g", "arguments": {{"x": [1]}}}}{end}'
    assert accepts(compiler, many, encode(tiny_tokenizer, two))


def test_compiled_grammars_are_cached_by_text(compiler: GrammarCompiler) -> None:
    grammars = [response_format_grammar(schema_format({**ANSWER, "title": f"t{i}"})) for i in range(3)]
    hits, misses = compiler.hits, compiler.misses
    first = compiler.compile(grammars[0])
    again = compiler.compile(grammars[0])
    assert first is not again  # each caller owns its matcher
    assert (compiler.hits, compiler.misses) == (hits + 1, misses + 1)
    compiler.compile(grammars[1])
    compiler.compile(grammars[2])  # capacity 2: the least recently used (grammars[0]) goes
    compiler.compile(grammars[0])
    assert compiler.misses == misses + 4


def test_an_uncompilable_schema_names_the_field(compiler: GrammarCompiler) -> None:
    grammar = response_format_grammar(
        schema_format({"type": "object", "properties": {"a": {"$ref": "#/nope"}}})
    )
    with pytest.raises(InvalidRequest) as caught:
        compiler.compile(grammar)
    assert caught.value.param == SCHEMA_PARAM and "nope" in caught.value.message


def test_constraint_waits_for_the_think_block_to_close(
    compiler: GrammarCompiler, tiny_tokenizer: Any
) -> None:
    grammar = response_format_grammar({"type": "json_object"})
    think_end = tuple(tiny_tokenizer.think_end_tokens)
    constraint = Constraint(compiler.compile(grammar), think_end=think_end)
    masks = BatchMasks(len(tiny_tokenizer.vocab))
    for token in encode(tiny_tokenizer, "Any thought at all, even { or }"):
        assert masks.mask([constraint]) is None
        constraint.advance(token)
    constraint.advance(think_end[0])
    assert constraint.active
    allowed = np.array(masks.mask([constraint, None]))
    assert {tiny_tokenizer.decode([int(t)])[0] for t in np.nonzero(allowed[0])[0]} == {"{"}
    assert allowed[1].all()  # a row without a grammar may take any token
    for token in encode(tiny_tokenizer, '{"k": 1}'):
        constraint.advance(token)
    assert constraint.error is None and constraint.matcher.is_accepting()
    constraint.advance(encode(tiny_tokenizer, "x")[0])  # outside the grammar: an error, never a crash
    assert constraint.error


def test_a_call_opened_while_thinking_starts_the_grammar(
    compiler: GrammarCompiler, tiny_tokenizer: Any
) -> None:
    start, end = tiny_tokenizer.tool_call_start, tiny_tokenizer.tool_call_end
    ids = [encode(tiny_tokenizer, marker)[0] for marker in (start, end)]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    grammar = tool_call_grammar(tools, "*", CallFormat(start, end, *ids), opened=False, parallel=False)
    constraint = Constraint(
        compiler.compile(grammar), think_end=tiny_tokenizer.think_end_tokens, call_start=[ids[0]]
    )
    constraint.advance(encode(tiny_tokenizer, "hm")[0])
    assert not constraint.active
    constraint.advance(ids[0])
    assert constraint.active
    for token in encode(tiny_tokenizer, json.dumps({"name": "f", "arguments": {}}) + end):
        constraint.advance(token)
    assert constraint.error is None and constraint.matcher.is_accepting()


def test_apply_mask_leaves_allowed_logits_alone() -> None:
    import mlx.core as mx

    logits = mx.array([[1.0, 2.0, 3.0]])
    masked = apply_mask(logits, mx.array([[True, False, True]]))
    assert masked.tolist() == [[1.0, float("-inf"), 3.0]]
    assert apply_mask(logits, None) is logits


def test_a_call_format_the_grammar_cannot_write_is_a_400_naming_tool_choice() -> None:
    from backends.mlx.tool_choice import ToolFormat, check_tool_choice
    from tests.mlx.test_prompt import WEATHER_TOOL, request, user

    def mistral_parser(text: str, tools: Any = None) -> Any:
        return None

    mistral_parser.__module__ = "mlx_lm.tool_parsers.mistral"
    mistral = ToolFormat("[TOOL_CALLS]", "", mistral_parser)
    auto = request(user(), tools=[WEATHER_TOOL])
    check_tool_choice(auto, mistral)  # nothing to force
    check_tool_choice(auto, None)
    for tool_choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        forced = request(user(), tools=[WEATHER_TOOL], tool_choice=tool_choice)
        with pytest.raises(InvalidRequest) as caught:
            check_tool_choice(forced, mistral)
        assert caught.value.param == "tool_choice" and "(mistral)" in caught.value.message
        with pytest.raises(InvalidRequest):
            check_tool_choice(forced, None)
