"""What a request's output must match, as an llguidance grammar, and compiling it.

Two things constrain decoding: `response_format` (any JSON object, or a JSON
Schema) and a forcing `tool_choice` ("required" or a named function), which
makes the answer one or more tool calls in the model's own format with each
call's arguments matching that tool's `parameters`. `Grammar` is the llguidance
grammar text plus the request field to blame when it does not compile;
`GrammarCompiler` turns it into a matcher template (kept in an LRU keyed by the
text, so a schema sent on every call compiles once) that each row copies.

JSON is written in one canonical layout, `{"a": 1, "b": [2, 3]}` (json.dumps'
own): no free whitespace, so a model cannot stall in a run of blanks and the
output does not depend on how ties between whitespace tokens break.

llguidance is imported lazily: the module is cheap to import where it is not
installed, and the gateway starts without it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway import InvalidRequest

SCHEMA_PARAM = "response_format.json_schema.schema"
# Options of llguidance's JSON compiler: json.dumps' separators, no other whitespace.
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_JSON_SCHEMA_KEYS = frozenset({"name", "schema", "strict", "description"})


@dataclass(frozen=True)
class Grammar:
    """An llguidance grammar (its JSON or Lark text) and the field it came from."""

    text: str
    param: str
    tool_calls: bool = False  # it writes tool calls (in the model's format)


def response_format_grammar(response_format: dict[str, Any] | None) -> Grammar | None:
    """The grammar `response_format` asks for (None for plain text); 400s for a bad shape."""
    from llguidance import LLMatcher

    schema = output_schema(response_format)
    if schema is None:
        return None
    try:
        text = LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_LAYOUT)
    except ValueError as error:
        raise InvalidRequest(f"{SCHEMA_PARAM} cannot be compiled: {error}", param=SCHEMA_PARAM) from None
    return Grammar(text, SCHEMA_PARAM)


def output_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON Schema of the answer (`{"type": "object"}` for json_object), after
    checking the shape OpenAI documents; None for text."""
    if response_format is None:
        return None
    kind = response_format.get("type")
    extra = set(response_format) - {"type", "json_schema"}
    if extra:
        raise InvalidRequest(f"response_format has unknown key '{min(extra)}'", param="response_format")
    if kind == "text":
        return None
    if kind == "json_object":
        if "json_schema" in response_format:
            raise InvalidRequest(
                "response_format.json_schema is only allowed with type 'json_schema'", param="response_format"
            )
        return {"type": "object"}
    if kind != "json_schema":
        raise InvalidRequest(
            "response_format.type must be 'text', 'json_object' or 'json_schema'",
            param="response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "response_format.json_schema must be an object with 'name' and 'schema'",
            param="response_format.json_schema",
        )
    unknown = set(spec) - _JSON_SCHEMA_KEYS
    if unknown:
        name = min(unknown)
        raise InvalidRequest(
            f"response_format.json_schema has unknown key '{name}'",
            param=f"response_format.json_schema.{name}",
        )
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidRequest(
            "response_format.json_schema.name must be a non-empty string",
            param="response_format.json_schema.name",
        )
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise InvalidRequest(
            "response_format.json_schema.strict must be a boolean", param="response_format.json_schema.strict"
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise InvalidRequest(f"{SCHEMA_PARAM} must be a JSON Schema object", param=SCHEMA_PARAM)
    return schema


@dataclass(frozen=True)
class CallFormat:
    """How a model writes a tool call: `start` + `{"name": ..., "arguments": {...}}` + `end`.

    `start_id`/`end_id` are the markers' ids when the tokenizer has each as one
    (special) token, which llguidance matches only by id.
    """

    start: str
    end: str
    start_id: int | None = None
    end_id: int | None = None


def tool_call_grammar(
    tools: Sequence[dict[str, Any]],
    forced: str,
    call_format: CallFormat,
    *,
    opened: bool,
    parallel: bool,
    answer: dict[str, Any] | None = None,
    strict_only: bool = False,
) -> Grammar:
    """One call (or, with `parallel`, one or more) to `forced` ("*": any tool), each
    call's arguments matching the tool's `parameters`. `opened`: the prompt already
    wrote the first call's start marker. `answer`: the JSON Schema of an answer the
    model may give instead of calls (`response_format` beside `tool_choice: auto`).
    `strict_only`: only tools marked `strict: true` get their `parameters` enforced;
    the others' arguments are any JSON object."""
    from llguidance import LLMatcher

    chosen = [tool["function"] for tool in tools if forced in ("*", tool["function"]["name"])]
    bodies = [
        {
            "type": "object",
            "properties": {
                "name": {"const": function["name"]},
                "arguments": _arguments_schema(function, strict_only),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for function in chosen
    ]
    body: dict[str, Any] = bodies[0] if len(bodies) == 1 else {"anyOf": bodies}
    definitions = _hoisted_definitions([_arguments_schema(function, strict_only) for function in chosen])
    if definitions:  # `#/$defs/...` in parameters now resolves against the call's schema
        body = {**body, "$defs": definitions}
    start = _literal(call_format.start, call_format.start_id)
    end = _literal(call_format.end, call_format.end_id)
    calls = f"{'' if opened else 'WS? ' + start + ' '}call{' (WS? ' + start + ' call)*' if parallel else ''}"
    lines = [
        f"start: {calls}" if answer is None else f"start: answer | {calls}",
        f'call: "\\n"? body "\\n"? {end}',
        f"body: %json {_json_rule(body)}",
        "WS: /[ \\n]{1,4}/",
    ]
    if answer is not None:
        lines.append(f"answer: %json {_json_rule(answer)}")
    text = LLMatcher.grammar_from_lark("\n".join(lines))
    return Grammar(text, "tools" if answer is None else SCHEMA_PARAM, tool_calls=True)


def _arguments_schema(function: dict[str, Any], strict_only: bool) -> dict[str, Any]:
    if strict_only and function.get("strict") is not True:
        return {"type": "object"}
    return function.get("parameters") or {"type": "object"}


def wants_strict_calls(tools: Sequence[dict[str, Any]] | None) -> bool:
    """Whether any tool asks for its arguments to be enforced (`strict: true`)."""
    return any((tool.get("function") or {}).get("strict") is True for tool in tools or ())


def _hoisted_definitions(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    definitions: dict[str, Any] = {}
    for schema in schemas:
        if isinstance(schema, dict):
            definitions.update(schema.get("$defs") or {})
    return definitions


def _json_rule(schema: dict[str, Any]) -> str:
    return json.dumps({**schema, "x-guidance": JSON_LAYOUT})


def _literal(text: str, token_id: int | None) -> str:
    """A marker in Lark: its text, or its token where it is a special token."""
    quoted = json.dumps(text)
    return f"({quoted} | <[{token_id}]>)" if token_id is not None else quoted


class GrammarCompiler:
    """Compiles grammars for one tokenizer; compiled matchers are kept by grammar text.

    `compile` may run in any thread (llguidance drops the GIL while it builds);
    it returns a fresh matcher that the caller owns.
    """

    def __init__(self, tokenizer: Any, capacity: int = 64) -> None:
        self.tokenizer = tokenizer  # llguidance.LLTokenizer
        self.capacity = capacity
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def compile(self, grammar: Grammar) -> Any:
        from llguidance import LLMatcher

        with self._lock:
            template = self._compiled.get(grammar.text)
            if template is not None:
                self._compiled.move_to_end(grammar.text)
                self.hits += 1
                return template.deep_copy()
        matcher = LLMatcher(self.tokenizer, grammar.text, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(
                f"{grammar.param} cannot be compiled to a grammar: {_first_line(matcher.get_error())}",
                param=grammar.param,
            )
        with self._lock:
            self.misses += 1
            self._compiled[grammar.text] = matcher
            while len(self._compiled) > self.capacity:
                self._compiled.popitem(last=False)
        return matcher.deep_copy()


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:4]) if lines else "unknown error"


def ll_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """An llguidance tokenizer over the model's vocabulary (`vocab_size` is the
    logits' width, which may exceed the tokenizer's); ~1 s for a large vocabulary."""
    from llguidance.hf import from_tokenizer

    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = sorted(int(i) for i in getattr(tokenizer, "eos_token_ids", ()) or ()) or None
    return from_tokenizer(hf, n_vocab=vocab_size, eos_token=eos)
