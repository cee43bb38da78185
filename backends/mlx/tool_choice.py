"""`tool_choice` on MLX: which call a request forces, and in which format the model writes it.

A model's tool-call format is its tokenizer's (mlx-lm infers the markers and the
parser), described to the model by its chat template. A chat template that
ignores `tools` (SmolLM2's, for one) gets the generic format instead: the
backend describes the tools in the system prompt (`generic_tools.py`) and asks
for `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, which the grammar
can force and the output parser reads back like any other format.

- "none": tools are left out of the prompt (`prompt.py`), tool parsing is off and
  the tool-call start token is banned when it is a single token;
- "required" or a named function: the grammar (`grammar.tool_call_grammar`)
  makes the answer a call (to that function), with arguments matching the
  tool's `parameters`; the prompt ends with the tool-call start marker (unless
  the model is left thinking), so the model's first token is already inside the
  call. That needs a call format the grammar can write: mlx-lm's `json_tools`
  one (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, Qwen, Hermes
  and most others); a model with another format gets a 400 naming `tool_choice`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.mlx.grammar import CallFormat
from gateway import ChatCompletionRequest, InvalidRequest, named_tool_choice

# mlx-lm tool parsers whose calls are `start` + a {"name", "arguments"} JSON object + `end`.
_JSON_CALL_PARSERS = frozenset({"json_tools"})


def forced_tool(request: ChatCompletionRequest) -> str | None:
    """`"*"` when any call is required, the function's name when one is named, else None."""
    if not request.tools:
        return None
    if request.tool_choice == "required":
        return "*"
    return named_tool_choice(request.tool_choice)


@dataclass(frozen=True)
class ToolFormat:
    """How this model's calls are written and read back."""

    start: str
    end: str
    parser: Callable[[str, Any], Any]
    generic: bool = False  # described in the system prompt by the backend, not by the template

    @property
    def can_force(self) -> bool:
        """Whether the grammar can write calls in this format."""
        return self.generic or getattr(self.parser, "__module__", "").rsplit(".", 1)[-1] in _JSON_CALL_PARSERS


def parse_json_call(text: str, tools: Any = None) -> Any:
    """The generic format's parser: the JSON object between the markers."""
    return json.loads(text.strip())


GENERIC = ToolFormat("<tool_call>", "</tool_call>", parse_json_call, generic=True)


def tool_format(tokenizer: Any, generic: bool) -> ToolFormat | None:
    """The tokenizer's own format, the generic one (`generic`: the chat template
    ignores tools), or None where the model has no tool-call format."""
    if generic:
        return GENERIC
    start, parser = getattr(tokenizer, "tool_call_start", None), getattr(tokenizer, "tool_parser", None)
    if not start or parser is None:
        return None
    return ToolFormat(start, getattr(tokenizer, "tool_call_end", None) or "", parser)


def call_format(tokenizer: Any, fmt: ToolFormat, ll_tokenizer: Any) -> CallFormat:
    """`fmt` for the grammar, with the markers' ids where llguidance sees them as
    special tokens (it matches those by id only)."""

    def special_id(text: str) -> int | None:
        token = single_token(tokenizer, text)
        return token if token is not None and ll_tokenizer.is_special_token(token) else None

    return CallFormat(fmt.start, fmt.end, special_id(fmt.start), special_id(fmt.end) if fmt.end else None)


def check_tool_choice(request: ChatCompletionRequest, fmt: ToolFormat | None) -> None:
    """400 for a forcing `tool_choice` the grammar cannot enforce in format `fmt`."""
    forced = forced_tool(request)
    if forced is None or (fmt is not None and fmt.can_force):
        return
    what = "'required'" if forced == "*" else f"the function '{forced}'"
    parser = getattr(fmt.parser, "__module__", "?").rsplit(".", 1)[-1] if fmt is not None else None
    reason = f"its tool-call format ({parser}) is not one" if parser else "it has no tool-call format"
    raise InvalidRequest(
        f"tool_choice {what} cannot be enforced on this model: {reason} the mlx backend can constrain",
        param="tool_choice",
    )


def single_token(tokenizer: Any, text: str | None) -> int | None:
    """The id of `text` when the tokenizer has it as exactly one token."""
    if not text:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None
