"""Tool calls in generated text: buffer one call's markup, parse it, make deltas.

The parser is the tokenizer's own (mlx-lm's `tool_parsers`): it takes the text
between the markers and the request's tools, and returns a dict with `name`
and `arguments` (or a list of them), or raises. Whatever it returns is checked
here, so a parser's odd result is treated like a parse failure.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any, NamedTuple

from gateway import ToolCallDelta

ToolParser = Callable[[str, Any], Any]


def make_call_id() -> str:
    """A fresh OpenAI-style call id: `call_` and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


class ParsedCall(NamedTuple):
    name: str
    arguments: str  # JSON text


def _as_call(item: Any) -> ParsedCall | None:
    if not isinstance(item, dict):
        return None
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return None
    arguments = item.get("arguments", item.get("parameters"))
    if arguments is None:
        return ParsedCall(name, "{}")
    if isinstance(arguments, str):  # already JSON text, as some models write it
        return ParsedCall(name, arguments)
    try:
        return ParsedCall(name, json.dumps(arguments, ensure_ascii=False))
    except (TypeError, ValueError):
        return None


def parse_calls(parser: ToolParser, text: str, tools: Any = None) -> list[ParsedCall] | None:
    """The calls in one block of tool-call markup, or None if it does not parse.

    Any exception from the parser counts as a failure: parsers are third-party
    code, and a model's bad output must not end the whole batch.
    """
    try:
        result = parser(text, tools)
    except Exception:  # noqa: BLE001 - third-party parser: any failure means "not a call"
        return None
    items = result if isinstance(result, list) else [result]
    calls = [_as_call(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


class ToolCallBuffer:
    """The open tool call of one choice, and the calls made so far.

    With `parallel` off, only the first call is kept: later calls (and any
    markup after the first call) are dropped silently, as a client that asked
    for one call at most cannot take more.
    """

    def __init__(self, parser: ToolParser, tools: Any = None, *, parallel: bool = True) -> None:
        self._parser = parser
        self._tools = tools
        self._parallel = parallel
        self._parts: list[str] = []
        self._marker = ""
        self.open_at: int | None = None
        self.names: list[str] = []

    def open(self, marker: str, at: int) -> None:
        """A call's start marker was matched at offset `at` of the output."""
        self._parts.clear()
        self._marker = marker
        self.open_at = at

    def add(self, text: str) -> None:
        self._parts.append(text)

    def close(self, end_marker: str) -> tuple[list[ToolCallDelta], str]:
        """(deltas of the calls made, "") or ([], the raw markup) when it does not parse.

        Each call gives two deltas: index, id and name first, then arguments.
        """
        body = "".join(self._parts)
        self._parts.clear()
        self.open_at = None
        if self.names and not self._parallel:
            return [], ""
        calls = parse_calls(self._parser, body, self._tools)
        if calls is None:
            return [], self._marker + body + end_marker
        if not self._parallel:
            calls = calls[:1]
        deltas: list[ToolCallDelta] = []
        for call in calls:
            index = len(self.names)
            self.names.append(call.name)
            deltas.append(ToolCallDelta(index=index, id=make_call_id(), name=call.name))
            deltas.append(ToolCallDelta(index=index, arguments=call.arguments))
        return deltas, ""
