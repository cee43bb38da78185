"""Per-choice text pipeline: generated token ids -> OpenAI-faithful `GenerationChunk`s.

Runs on the engine thread, once per generated token per row, so every step
is O(1) in the length of the output. The stages, in order:

1. `TextDecoder`: token -> new text; a character split over tokens is held
   until complete (never U+FFFD mid-stream).
2. `Segmenter`: splits the text at markup (think markers, tool-call markers,
   the model's structural markers) into content / reasoning / tool spans.
   Markers never reach the output. Markers are matched on text, so they are
   found however they were tokenized (a model that writes `<think>` as plain
   text starts a reasoning block too).
3. `Channel`s: content is matched against the stop strings (held back only
   while it may still begin one); reasoning and content drop the whitespace
   that only separates them from markup.
4. Tool-call markup is buffered and parsed when its end marker arrives.

Decisions (the client-visible ones):
- Stop strings are searched in content only: not in reasoning, not inside
  tool-call markup, and not across a marker. Markup wins: a stop string that
  is also a marker acts as the marker.
- A reasoning block is stripped of leading and trailing whitespace, and
  content right after `</think>` or a tool call of leading whitespace (the
  newlines models put there). With tool parsing on, trailing whitespace of
  content is held back and dropped when a tool call follows, and at the end
  when any call was made, so calls come with no stray content.
- `reasoning_tokens` counts every token from the one that completes the
  opening marker (or the first, with `in_reasoning`) through the one that
  completes the closing marker: markers included, as they are thinking spent.
- Logprobs are reported for content tokens only (OpenAI reports no logprobs
  for reasoning or tool calls): a token is reported, once, in the chunk that
  releases the first of its characters that is content; tokens that make up
  markup, reasoning, a parsed tool call, stripped whitespace or a stop string
  are not reported. A token's `token` is its text with bytes that are not a
  whole UTF-8 character written as `\\xNN` (OpenAI's form); `bytes` are raw.
- A tool call whose markup does not parse (parser raises or returns no name)
  is emitted as content, markers included, so the model's output is not lost;
  it is not a call. The same holds for a call still open when the output ends
  (for parsers without an end marker, the open call is parsed then).
- finish_reason: "stop" becomes "tool_calls" when any call was made; a stop
  string always gives "stop"/"tool_calls"; "length" stays "length" even after
  calls (the client must know the output was cut). With "stop", the stop
  string that matched is the last chunk's `stop_sequence`.
- Feeding after `stopped` or `finish` is ignored (returns None).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from backends.mlx.output_logprobs import LogprobTracker
from backends.mlx.output_scan import CONTENT, REASONING, TOOL, Channel, MarkEvent, Segmenter, TextEvent
from backends.mlx.output_text import TextDecoder, token_table
from backends.mlx.output_tools import ToolCallBuffer, make_call_id
from gateway import FinishReason, GenerationChunk, ToolCallDelta

__all__ = ["ChoiceOutput", "TokenStep", "make_call_id"]


class TokenStep(NamedTuple):
    """One generated token of one row, as the engine hands it over."""

    token: int
    logprob: float | None = None  # of the sampled token (needed when logprobs are asked)
    top: Sequence[tuple[int, float]] | None = None  # (token id, logprob), most likely first


class ChoiceOutput:
    """Turns one choice's generated tokens into chunks; see the module doc for the rules.

    `tools` (the request's tool definitions) is passed to the tool parser,
    which some parsers use to convert argument types. `tool_format` (markers and
    parser) replaces the tokenizer's own, e.g. with the generic format.
    `continuation`: the text
    continues a raw prompt, so its leading space is kept, and (`reports_end`)
    the end-of-sequence token is among its logprobs, as the legacy API lists it.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        choice: int = 0,
        stop: Sequence[str] = (),
        parse_tools: bool = False,
        in_reasoning: bool = False,
        in_tool_call: bool = False,
        parse_reasoning: bool = True,
        logprobs: bool = False,
        top_logprobs: int = 0,
        parallel_tool_calls: bool = True,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_format: Any = None,
        continuation: bool = False,
    ) -> None:
        self._table = token_table(tokenizer)
        self._decoder = TextDecoder(self._table, trim=not continuation)
        self.reports_end = continuation and logprobs
        self._choice = choice
        think_start = getattr(tokenizer, "think_start", None)
        think_end = getattr(tokenizer, "think_end", None)
        reasoning = parse_reasoning and bool(think_start) and bool(think_end)
        if tool_format is not None:  # the format the prompt asked for (see tool_choice.ToolFormat)
            tool_start, tool_end, parser = tool_format.start, tool_format.end, tool_format.parser
        else:
            tool_start = getattr(tokenizer, "tool_call_start", None)
            tool_end = getattr(tokenizer, "tool_call_end", None) or ""
            parser = getattr(tokenizer, "tool_parser", None)
        tooling = parse_tools and bool(tool_start) and parser is not None

        rules: dict[int, list[tuple[str, int]]] = {CONTENT: [], REASONING: [], TOOL: []}
        if reasoning:
            rules[CONTENT] += [(think_start, REASONING), (think_end, CONTENT)]
            rules[REASONING] += [(think_end, CONTENT), (think_start, REASONING)]
        if tooling:
            rules[CONTENT] += [(tool_start, TOOL), (tool_end, CONTENT)]
            rules[TOOL] += [(tool_end, CONTENT), (tool_start, TOOL)]
            if reasoning:
                rules[REASONING].append((tool_start, TOOL))
        rules[CONTENT] += [(marker, CONTENT) for marker in getattr(tokenizer, "structural_markers", ())]
        mode = REASONING if in_reasoning and reasoning else CONTENT
        if in_tool_call and tooling:
            mode = TOOL  # the prompt ends with the start marker: the output begins inside a call
        self._segmenter = Segmenter(rules, mode)
        self._content = Channel(stop, hold_space=tooling)
        self._reasoning = Channel(hold_space=True)
        self._reasoning.lstrip = mode == REASONING
        self._tools = ToolCallBuffer(parser, tools, parallel=parallel_tool_calls) if tooling else None
        if self._tools is not None and mode == TOOL:
            self._tools.open(tool_start, 0)

        self._decoded = 0  # characters decoded so far
        self._segmented = 0  # characters the segmenter has released (events) so far
        self._logprobs = LogprobTracker(self._table, top_logprobs) if logprobs else None
        self._stopped = False
        self._finished = False
        self._opened_reasoning = False
        # What the current step releases, gathered across stages.
        self._text: list[str] = []
        self._thought: list[str] = []
        self._deltas: list[ToolCallDelta] = []

        self.completion_tokens = 0
        self.reasoning_tokens = 0

    @property
    def stopped(self) -> bool:
        """A stop string matched: the engine should end this row now."""
        return self._stopped

    @property
    def tool_calls(self) -> list[str]:
        """Names of the calls made so far, in order (for usage and `tool_choice` checks)."""
        return list(self._tools.names) if self._tools is not None else []

    @property
    def _made_calls(self) -> bool:
        return self._tools is not None and bool(self._tools.names)

    def feed(self, step: TokenStep) -> GenerationChunk | None:
        """The output this token releases, or None when it is all held back."""
        if self._stopped or self._finished:
            return None
        self.completion_tokens += 1
        was_reasoning = self._segmenter.mode == REASONING
        text = self._decoder.add(step.token)
        start = self._decoded
        self._decoded += len(text)
        if self._logprobs is not None:
            self._logprobs.add(step, start, self._decoded)
        if text:
            events: list[TextEvent | MarkEvent] = []
            self._segmenter.push(text, events)
            self._dispatch(events)
        if was_reasoning or self._opened_reasoning:
            self.reasoning_tokens += 1
            self._opened_reasoning = False
        if self._logprobs is not None:
            self._settle()
        return self._chunk(None)

    def finish(self, reason: Literal["stop", "length"], end: TokenStep | None = None) -> GenerationChunk:
        """The choice's last chunk: held text flushed, open markup closed, finish_reason set;
        `end`, the end-of-sequence token, gets its logprob reported last (`reports_end`)."""
        if self._finished:
            raise RuntimeError("finish() was already called for this choice")
        self._finished = True
        if not self._stopped:
            events: list[TextEvent | MarkEvent] = []
            tail = self._decoder.finish()
            self._decoded += len(tail)
            if tail:
                self._segmenter.push(tail, events)
            self._segmenter.flush(events)
            self._dispatch(events)
        if not self._stopped:
            if self._tools is not None and self._tools.open_at is not None:
                self._close_tool("", self._decoded)
            self._release_reasoning()
            text, at = self._content.flush(drop_space=self._made_calls)
            self._emit_content(text, at, False)
        if self._logprobs is not None:
            self._logprobs.clear()
            if end is not None and self.reports_end:
                self._logprobs.report_token(end)
        finish: FinishReason
        if reason == "length" and not self._stopped:
            finish = "length"
        else:
            finish = "tool_calls" if self._made_calls else "stop"
        matched = self._content.matched if self._stopped and finish == "stop" else None
        chunk = self._chunk(finish, matched)
        assert chunk is not None
        return chunk

    # --- stages -------------------------------------------------------------------

    def _dispatch(self, events: list[TextEvent | MarkEvent]) -> None:
        for event in events:
            if self._stopped:
                return
            at = self._segmented
            if len(event) == 2:
                mode, text = event  # type: ignore[misc]
                self._segmented += len(text)
                if mode == CONTENT:
                    self._emit_content(*self._content.push(text, at))
                elif mode == REASONING:
                    self._thought.append(self._reasoning.push(text, at)[0])
                elif self._tools is not None:
                    self._tools.add(text)
            else:
                old, marker, new = event  # type: ignore[misc]
                self._segmented += len(marker)
                self._transition(old, marker, new, at)

    def _transition(self, old: int, marker: str, new: int, at: int) -> None:
        if old == TOOL and new == TOOL:  # a start marker: the next call begins, this one ends
            self._close_tool("", at)
        elif old == TOOL:
            self._close_tool(marker, at + len(marker))
        elif old == REASONING and new != REASONING:
            self._release_reasoning()
            self._content.lstrip = True
        if new == old and new != TOOL:
            return  # a stray or structural marker: removed
        if new == REASONING:
            self._opened_reasoning = True
            self._reasoning.lstrip = True
        if old == CONTENT:  # markup follows: release held content, less its trailing space
            self._emit_content(*self._content.flush(drop_space=True), False)
        if new == TOOL and self._tools is not None:
            self._tools.open(marker, at)

    def _emit_content(self, text: str, at: int, stopped: bool) -> None:
        if stopped:
            self._stopped = True
            if self._made_calls:
                text = text.rstrip()
        if text:
            self._text.append(text)
            if self._logprobs is not None:
                self._logprobs.report(at, at + len(text))

    def _release_reasoning(self) -> None:
        self._thought.append(self._reasoning.flush(drop_space=True)[0])

    def _close_tool(self, end_marker: str, end: int) -> None:
        assert self._tools is not None
        opened_at = self._tools.open_at
        deltas, raw = self._tools.close(end_marker)
        if raw and opened_at is not None:  # did not parse: show the model's text as content
            self._text.append(raw)
            if self._logprobs is not None:
                self._logprobs.report(opened_at, end)
        else:  # calls made (or dropped, with parallel calls off): whitespace after them is stray
            self._deltas += deltas
            self._content.lstrip = True

    def _settle(self) -> None:
        """Tell the logprob tracker how far the output is decided (released or dropped)."""
        assert self._logprobs is not None
        if self._stopped:
            self._logprobs.clear()
            return
        frontier = self._segmented
        if self._content.held:
            frontier = min(frontier, self._content.held_at)
        if self._reasoning.held:
            frontier = min(frontier, self._reasoning.held_at)
        if self._tools is not None and self._tools.open_at is not None:
            frontier = min(frontier, self._tools.open_at)
        self._logprobs.settle(frontier)

    # --- output -------------------------------------------------------------------

    def _chunk(self, finish: FinishReason | None, stop_sequence: str | None = None) -> GenerationChunk | None:
        text = "".join(self._text) if self._text else ""
        thought = "".join(self._thought) if self._thought else ""
        self._text.clear()
        self._thought.clear()
        logprobs = self._logprobs.take() if self._logprobs is not None else None
        if not (text or thought or self._deltas or logprobs or finish):
            return None
        chunk = GenerationChunk(
            choice=self._choice,
            text=text,
            reasoning=thought,
            tool_calls=self._deltas or None,
            logprobs=logprobs,
            finish_reason=finish,
            stop_sequence=stop_sequence,
        )
        self._deltas = []
        return chunk
