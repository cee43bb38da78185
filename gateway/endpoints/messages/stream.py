"""The Messages stream: typed SSE events (`event: <type>` then its JSON), as Anthropic sends.

message_start and a ping open it; each run of reasoning, text or one tool call
is a content block (start, deltas, stop; a thinking block ends with its
`signature_delta`); message_delta carries the stop reason and the final usage
(prompt counts included: they are known only once generation ends), then
message_stop. A failure after the start is an `error` event.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.backend import GenerationChunk
from gateway.endpoints.messages.answer import error_object, message_usage, signature, stop_reason
from gateway.endpoints.messages.wire import (
    AnthropicMessage,
    ContentBlockDelta,
    ContentBlockStart,
    ContentBlockStop,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageUsage,
    SignatureDelta,
    StopDelta,
    TextDelta,
    TextOut,
    ThinkingDelta,
    ThinkingOut,
    ToolUseStart,
)
from gateway.errors import GatewayError
from gateway.responses import ChatCompletion

_encode = msgspec.json.Encoder().encode
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

BlockKind = Literal["text", "thinking", "tool_use"]


def event(name: bytes, payload: object) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(payload) + b"\n\n"


class MessagesStreamWriter:
    """One choice's chunks (Messages has no `n`) as content blocks, in the order they come."""

    __slots__ = (
        "finish_reason",
        "id",
        "index",
        "kind",
        "model",
        "omit_thinking",
        "started",
        "stop_sequence",
        "thinking",
        "tools",
    )

    def __init__(self, message_id: str, model: str, omit_thinking: bool = False) -> None:
        self.id, self.model = message_id, model
        self.omit_thinking = omit_thinking  # `thinking.display: "omitted"`: only the signature
        self.started = False
        self.index = -1  # the open block's index
        self.kind: BlockKind | None = None
        self.thinking: list[str] = []  # the open thinking block's text, for its signature
        self.tools: dict[int, int] = {}  # tool-call index -> its block's index
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None

    def chunk(self, chunk: GenerationChunk) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            start = AnthropicMessage(self.id, self.model, [], None, None, MessageUsage(0, 0))
            out += (event(b"message_start", MessageStart(start)), _PING)
        if chunk.reasoning:
            if self.kind != "thinking":
                self._open(out, "thinking", ThinkingOut("", ""))
            self.thinking.append(chunk.reasoning)
            if not self.omit_thinking:
                delta = ContentBlockDelta(self.index, ThinkingDelta(chunk.reasoning))
                out.append(event(b"content_block_delta", delta))
        if chunk.text:
            if self.kind != "text":
                self._open(out, "text", TextOut(""))
            out.append(event(b"content_block_delta", ContentBlockDelta(self.index, TextDelta(chunk.text))))
        for call in chunk.tool_calls or ():
            if call.id:
                self._open(out, "tool_use", ToolUseStart(call.id, call.name or ""))
                self.tools[call.index] = self.index
            if call.arguments:
                index = self.tools.get(call.index, self.index)
                out.append(
                    event(b"content_block_delta", ContentBlockDelta(index, InputJsonDelta(call.arguments)))
                )
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.stop_sequence = chunk.stop_sequence
        return b"".join(out)

    def end(self, completion: ChatCompletion) -> bytes:
        out: list[bytes] = []
        self._close(out)
        reason = stop_reason(self.finish_reason, self.stop_sequence)
        sequence = self.stop_sequence if reason == "stop_sequence" else None
        delta = MessageDelta(StopDelta(reason, sequence), message_usage(completion.usage))
        out += (event(b"message_delta", delta), _STOP)
        return b"".join(out)

    def error(self, error: GatewayError) -> bytes:
        return event(b"error", error_object(error))

    def _open(self, out: list[bytes], kind: BlockKind, block: TextOut | ThinkingOut | ToolUseStart) -> None:
        self._close(out)
        self.index += 1
        self.kind = kind
        out.append(event(b"content_block_start", ContentBlockStart(self.index, block)))

    def _close(self, out: list[bytes]) -> None:
        if self.kind is None:
            return
        if self.kind == "thinking":
            text, self.thinking = "".join(self.thinking), []
            out.append(
                event(b"content_block_delta", ContentBlockDelta(self.index, SignatureDelta(signature(text))))
            )
        out.append(event(b"content_block_stop", ContentBlockStop(self.index)))
        self.kind = None
