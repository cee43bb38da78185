"""`tool_choice` without constrained decoding: steer the prompt, check the result.

Without grammar-constrained decoding the model's output cannot be forced to be a
valid call, so the backend does what it can and never passes silently:
- "none": tools are left out of the prompt (`prompt.py`), tool parsing is off and
  the tool-call start token is banned when it is a single token;
- a named function: the prompt shows only that tool;
- "required" or a named function: the prompt ends with the tool-call start marker
  (unless the model is left thinking), so the answer begins inside a call; a
  choice that still ends without the demanded call (or calls another function)
  fails the request with `ToolChoiceNotMet`.
"""

from __future__ import annotations

from typing import Any

from gateway.backend import GenerationChunk
from gateway.errors import BackendFailed
from gateway.protocol import ChatCompletionRequest, replace
from gateway.validation import named_tool_choice


class ToolChoiceNotMet(BackendFailed):
    """The model ignored a forcing `tool_choice` (no constrained decoding yet)."""

    code = "tool_choice_not_met"


def forced_tool(request: ChatCompletionRequest) -> str | None:
    """`"*"` when any call is required, the function's name when one is named, else None."""
    if not request.tools:
        return None
    if request.tool_choice == "required":
        return "*"
    return named_tool_choice(request.tool_choice)


def prompt_request(request: ChatCompletionRequest, forced: str | None) -> ChatCompletionRequest:
    """With a named tool_choice the model is shown only that tool: the best we can
    do to steer it without constrained decoding."""
    if forced is None or forced == "*":
        return request
    tools = [tool for tool in request.tools or () if tool.get("function", {}).get("name") == forced]
    return replace(request, tools=tools)


def enforce_tool_choice(forced: str, chunk: GenerationChunk, calls: list[str]) -> None:
    """Fail loudly when a choice ends without the call `tool_choice` demands."""
    what = "a tool call" if forced == "*" else f"a call to '{forced}'"
    wrong = [name for name in calls if forced != "*" and name != forced]
    if calls and not wrong:
        return
    made = f"called {', '.join(repr(n) for n in calls)}" if calls else "made no tool call"
    raise ToolChoiceNotMet(
        f"tool_choice requires {what}, but the model {made} (choice {chunk.choice}, finish_reason "
        f"'{chunk.finish_reason}'); the mlx backend cannot force tool calls yet (no constrained decoding)",
        param="tool_choice",
    )


def single_token(tokenizer: Any, text: str | None) -> int | None:
    """The id of `text` when the tokenizer has it as exactly one token."""
    if not text:
        return None
    ids = tokenizer.encode(text, add_special_tokens=False)
    return int(ids[0]) if len(ids) == 1 else None
