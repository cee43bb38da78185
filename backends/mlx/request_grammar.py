"""Which grammar a request's output must follow, and the constraint of each of its rows.

- A forcing `tool_choice` ("required", a named function): calls only, in the
  model's format (`tool_choice.ToolFormat`), written from the start marker the
  prompt opened (or from the top, when the model is left thinking).
- `response_format` json_object/json_schema: that JSON; beside tools the model
  may call instead (`tool_choice: auto`), the answer is that JSON or calls.
- `tool_choice: auto` with a tool marked `strict: true`: free text until the model
  opens a call, then the call.
A row left thinking by its prompt is free until its think block closes.
"""

from __future__ import annotations

from typing import Any

from backends.mlx.constraint import Constraint, think_end_tokens
from backends.mlx.grammar import (
    Grammar,
    GrammarCompiler,
    output_schema,
    response_format_grammar,
    tool_call_grammar,
    wants_strict_calls,
)
from backends.mlx.prompt import Prompt
from backends.mlx.tool_choice import ToolFormat, call_format, forced_tool
from gateway import ChatCompletionRequest


def grammar_field(request: ChatCompletionRequest, fmt: ToolFormat | None) -> str | None:
    """The request field that asks for a grammar (None: decoding is free)."""
    if forced_tool(request):
        return "tool_choice"
    if output_schema(request.response_format) is not None:
        return "response_format"
    if fmt is not None and fmt.can_force and wants_strict_calls(request.tools):
        return "tools"
    return None


def request_grammar(
    request: ChatCompletionRequest,
    prompt: Prompt,
    fmt: ToolFormat | None,
    tokenizer: Any,
    compiler: GrammarCompiler,
) -> Grammar:
    """The grammar of a request for which `grammar_field` is not None."""
    calls = call_format(tokenizer, fmt, compiler.tokenizer) if fmt and fmt.can_force else None
    parallel = request.parallel_tool_calls is not False
    forced = forced_tool(request)
    if forced:
        assert calls is not None  # check_tool_choice said so
        return tool_call_grammar(
            request.tools or [], forced, calls, opened=prompt.in_tool_call, parallel=parallel
        )
    answer = output_schema(request.response_format)
    if calls is not None:  # a schema'd answer or calls; or (no answer schema) strict calls
        return tool_call_grammar(
            request.tools or [], "*", calls, opened=False, parallel=parallel, answer=answer,
            strict_only=answer is None,
        )  # fmt: skip
    grammar = response_format_grammar(request.response_format)
    assert grammar is not None  # response_format "text" was dropped by the gateway
    return grammar


def row_constraints(
    request: ChatCompletionRequest,
    prompt: Prompt,
    fmt: ToolFormat | None,
    grammar: Grammar,
    matcher: Any,
    tokenizer: Any,
) -> list[Constraint]:
    """One constraint per choice, each with its own copy of the compiled `matcher`."""
    think_end = think_end_tokens(tokenizer, prompt.in_reasoning)
    call_start: list[int] = []
    if grammar.tool_calls and fmt is not None:
        call_start = tokenizer.encode(fmt.start, add_special_tokens=False)
    until_call = grammar_field(request, fmt) == "tools"  # strict tools only: free until a call opens
    matchers = [matcher] + [matcher.deep_copy() for _ in range(request.choice_count - 1)]
    return [
        Constraint(m, think_end=think_end, call_start=call_start, until_call=until_call) for m in matchers
    ]
