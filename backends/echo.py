"""The `echo` backend: deterministic output derived from the request.

It answers with the words of the last user message ("tokens" are words), so
tests can predict every byte, and it needs no model, so `make serve` answers on
any machine. Being deterministic, it accepts the sampling fields and gives the
same answer whatever their values (documented in the README).

Tool calls, for testing tool routing: a last user message `call <name> <json
arguments>` makes the model call that tool when the request offers it (one such
line per call, for parallel calls); after a `tool` message it answers
`tool <name> said: <result>`.

It counts a prompt's tokens (`count_tokens`, for Messages' count_tokens) as it
counts them for usage: words plus one per message; a stop string that ends the
answer is named on the last chunk (`stop_sequence`).

Options (`[models.x.options]`): `delay_ms` per token, `fail_after_tokens` to
simulate an engine failure mid-stream, `echo_system` to answer with the system
prompt instead (to see what prompt-rewriting plugins send).

Legacy completions: each raw prompt is continued with its own words (a prompt
of token ids reads as its ids); `echo` puts the prompt first. Embeddings are
refused (it lists no `input`): there is no model to embed with.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from msgspec import Meta, Struct

from gateway import (
    BackendFailed,
    ChatCompletionRequest,
    CompletionRequest,
    GenerationChunk,
    GenerationEnd,
    GenerationEvent,
    GenerationOptions,
    ModelSpec,
    TokenUsage,
    ToolCallDelta,
    UnsupportedField,
    hookimpl,
    named_tool_choice,
    wall_clock_stats,
)


class EchoOptions(Struct, forbid_unknown_fields=True):
    delay_ms: Annotated[float, Meta(ge=0)] = 0.0
    fail_after_tokens: Annotated[int, Meta(ge=0)] | None = None
    echo_system: bool = False


class EchoBackend:
    kind = "echo"
    supported_fields = frozenset(
        {
            "max_tokens",
            "n",
            "stop",
            "seed",
            "temperature",
            "top_p",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "prompt",
            "echo",
        }
    )

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options: EchoOptions = spec.options_as(EchoOptions)

    async def load(self) -> None:
        return None

    async def unload(self) -> None:
        return None

    def validate(self, request: ChatCompletionRequest) -> None:
        """A forcing `tool_choice` is honoured only when the answer is a call to that tool."""
        forced = named_tool_choice(request.tool_choice) or request.tool_choice == "required"
        if not forced:
            return
        calls = _tool_calls(request)
        if not calls or (isinstance(forced, str) and any(name != forced for name, _ in calls)):
            raise UnsupportedField(
                "tool_choice",
                self.kind,
                "echo calls a tool only when the last user message is 'call <that name> <json>'",
            )

    async def count_tokens(self, request: ChatCompletionRequest) -> int:
        return _prompt_tokens(request)

    async def generate(
        self, request: ChatCompletionRequest, options: GenerationOptions
    ) -> AsyncIterator[GenerationEvent]:
        """Word by word, built lazily: memory and time per token stay flat however
        large `max_tokens` or the message is, and the loop gets a turn every
        `_YIELD_EVERY` words, so one long answer never holds up other requests."""
        started = time.perf_counter()
        limit = request.max_tokens or 16
        raw = isinstance(request, CompletionRequest)
        calls = [] if raw else _tool_calls(request)
        if isinstance(request, CompletionRequest):  # raw prompts: each continued with its own words
            texts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in request.raw_prompts]
            prompt_tokens = sum(len(text.split()) for text in texts)
            turns = [(text, text) for text in texts]  # (prompt to echo, text to answer with)
            echo = bool(request.echo)
        else:
            prompt_tokens = _prompt_tokens(request)
            turns, echo = [("", "" if calls else _reply_text(request, self.options))], False
        counter = _Counter()
        n = request.n or 1
        exact = limit if options.bench else None
        for number, (prompt, text) in enumerate(turns):
            for copy in range(n):
                choice = number * n + copy
                if echo and prompt:
                    yield GenerationChunk(choice=choice, text=prompt)
                words = _words(text, exact)  # built lazily, per choice
                async for chunk in self._choice(choice, words, calls, limit, request, options, counter):
                    yield chunk
        usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=counter.tokens)
        yield GenerationEnd(
            usage=usage, stats=wall_clock_stats(usage, started, counter.first) if options.bench else None
        )

    async def _choice(
        self,
        choice: int,
        words: Iterator[str],
        calls: list[tuple[str, str]],
        limit: int,
        request: ChatCompletionRequest,
        options: GenerationOptions,
        counter: _Counter,
    ) -> AsyncIterator[GenerationChunk]:
        """One choice, word by word: memory and time per word stay flat however large
        `max_tokens` or the message is (only the tail a stop string can span is kept),
        and the loop gets a turn every `_YIELD_EVERY` words, so one long answer never
        holds up other requests."""
        stops = [] if options.bench else request.stop_strings
        keep = max((len(stop) for stop in stops), default=1) - 1  # text a stop string can span
        emitted, tail = 0, ""
        finish, matched = "stop", None
        for word in words:
            if emitted == limit:
                finish = "length"
                break
            if (
                self.options.fail_after_tokens is not None
                and counter.tokens >= self.options.fail_after_tokens
            ):
                raise BackendFailed("echo backend failed on purpose (fail_after_tokens)")
            if self.options.delay_ms:
                await asyncio.sleep(self.options.delay_ms / 1000)
            elif emitted % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if stops:
                window = tail + word
                found = _stop_position(window, stops)
                if found is not None:
                    stop_at, matched = found
                    piece = window[:stop_at][len(tail) :]
                    if piece:
                        yield GenerationChunk(choice=choice, text=piece)
                    break
                tail = window[len(window) - keep :] if keep else ""
            emitted += 1
            counter.tokens += 1
            counter.first = counter.first or time.perf_counter()
            yield GenerationChunk(choice=choice, text=word)
        if emitted == limit and finish == "stop" and options.bench:
            finish = "length"
        for index, (name, arguments) in enumerate(calls):
            counter.tokens += 1
            call_id = f"call_echo{choice}" + (f"_{index}" if index else "")
            yield GenerationChunk(choice=choice, tool_calls=[ToolCallDelta(index, call_id, name)])
            yield GenerationChunk(choice=choice, tool_calls=[ToolCallDelta(index, arguments=arguments)])
            finish = "tool_calls"
        stopped_by = matched if finish == "stop" else None
        yield GenerationChunk(choice=choice, finish_reason=finish, stop_sequence=stopped_by)  # type: ignore[arg-type]


class _Counter:
    """Tokens generated over all choices, and when the first one came."""

    __slots__ = ("first", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.first: float | None = None


def _reply_text(request: ChatCompletionRequest, options: EchoOptions) -> str:
    """What the answer repeats: the last user message (or the system prompt, or a tool's result)."""
    last = request.messages[-1]
    if options.echo_system:
        system = [m.text() for m in request.messages if m.role in ("system", "developer")]
        text = " ".join(system) or "(no system prompt)"
    elif last.role == "tool":
        text = f"tool {_called_name(request, last.tool_call_id)} said: {last.text()}"
    else:
        text = next((m.text() for m in reversed(request.messages) if m.role == "user"), "") or "(empty)"
    return text


_YIELD_EVERY = 256
_WORD = re.compile(r"\S+")


def _words(text: str, exact: int | None) -> Iterator[str]:
    """The words of `text` as tokens, lazily ("" gives none; the first without its leading
    space); `exact` repeats them to that many (bench mode: like a banned end-of-sequence)."""
    words: Iterator[str] = (match.group() for match in _WORD.finditer(text))
    if exact is not None:
        words = itertools.islice(_cycle_words(text), exact)
    for index, word in enumerate(words):
        yield word if index == 0 else " " + word


def _cycle_words(text: str) -> Iterator[str]:
    """The words of `text` over and over (none if it has none), without a list of them."""
    while True:
        found = False
        for match in _WORD.finditer(text):
            found = True
            yield match.group()
        if not found:
            return


def _called_name(request: ChatCompletionRequest, call_id: str | None) -> str:
    for message in request.messages:
        for call in message.tool_calls or ():
            if call.id == call_id:
                return call.function.name
    return "?"


def _tool_calls(request: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(name, arguments) for each `call <name> <json>` line of the last user message."""
    last = request.messages[-1]
    if not request.tools or request.tool_choice == "none" or last.role != "user":
        return []
    calls = []
    for line in last.text().splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or parts[0] != "call":
            return []
        calls.append((parts[1], parts[2] if len(parts) == 3 else "{}"))
    offered = {tool.get("function", {}).get("name") for tool in request.tools}
    return calls if all(name in offered for name, _ in calls) else []  # like a model: offered tools only


def _stop_position(text: str, stops: list[str]) -> tuple[int, str] | None:
    """Where the first stop string in `text` starts, and which one it is."""
    positions = [(text.find(stop), stop) for stop in stops if stop in text]
    return min(positions, key=lambda found: found[0]) if positions else None


def _prompt_tokens(request: ChatCompletionRequest) -> int:
    """The prompt's "tokens": its words, plus one per message."""
    return sum(len(message.text().split()) + 1 for message in request.messages)


@hookimpl
def register_backends(register) -> None:  # type: ignore[no-untyped-def]
    register("echo", EchoBackend)
