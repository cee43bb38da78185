"""`tool_choice` on MLX: which call a request forces, and in which format the model writes it.

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

from typing import Any

from backends.mlx.grammar import CallFormat
from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest
from gateway.validation import named_tool_choice

# mlx-lm tool parsers whose calls are `start` + a {"name", "arguments"} JSON object + `end`.
_JSON_CALL_PARSERS = frozenset({"json_tools"})


def forced_tool(request: ChatCompletionRequest) -> str | None:
    """`"*"` when any call is required, the function's name when one is named, else None."""
    if not request.tools:
        return None
    if request.tool_choice == "required":
        return "*"
    return named_tool_choice(request.tool_choice)


def parser_name(tokenizer: Any) -> str | None:
    parser = getattr(tokenizer, "tool_parser", None)
    if parser is None:
        return None
    return str(getattr(parser, "__module__", "")).rsplit(".", 1)[-1] or None


def knows_call_format(tokenizer: Any) -> bool:
    """Whether the grammar can write this model's tool calls."""
    return parser_name(tokenizer) in _JSON_CALL_PARSERS and bool(getattr(tokenizer, "tool_call_start", None))


def call_format(tokenizer: Any, ll_tokenizer: Any) -> CallFormat | None:
    """The model's call format, with the markers' ids where llguidance sees them as
    special tokens (it matches those by id only)."""
    if not knows_call_format(tokenizer):
        return None
    start, end = tokenizer.tool_call_start, tokenizer.tool_call_end or ""

    def special_id(text: str) -> int | None:
        token = single_token(tokenizer, text)
        return token if token is not None and ll_tokenizer.is_special_token(token) else None

    return CallFormat(start, end, special_id(start), special_id(end))


def check_tool_choice(request: ChatCompletionRequest, tokenizer: Any) -> None:
    """400 for a forcing `tool_choice` the grammar cannot enforce on this model."""
    forced = forced_tool(request)
    if forced is None or knows_call_format(tokenizer):
        return
    what = "'required'" if forced == "*" else f"the function '{forced}'"
    parser = parser_name(tokenizer)
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
