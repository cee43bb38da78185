"""The Responses stream: typed events with a `sequence_number`, item by item.

`response.created` and `response.in_progress` open the stream with the first
output; each output item is opened (`output_item.added`, `content_part.added`),
grows by deltas and is closed (`.done` events, `output_item.done`) before the
next one starts. The stream ends with `response.completed` or
`response.incomplete` carrying the whole resource, or, on a failure after the
start, an `error` event and `response.failed`.

The same writer serves SSE (`event:` + `data:` lines, as OpenAI sends) and
WebSocket mode (one JSON message per event): `frame` decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.backend import GenerationChunk, ToolCallDelta
from gateway.endpoints.responses.errors import error_fields
from gateway.endpoints.responses.output import (
    item_id,
    logprobs_of,
    reasoning_item,
    resource,
    status_of,
    usage_of,
)
from gateway.endpoints.responses.wire import (
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputTextPart,
    ResponseError,
    ResponseResource,
    ResponseUsage,
)
from gateway.errors import GatewayError
from gateway.protocol import ChatCompletionRequest
from gateway.responses import ChatCompletion

if TYPE_CHECKING:
    from gateway.endpoints.responses.endpoint import ResponsesCall

_encode = msgspec.json.Encoder().encode
Frame = Callable[[str, dict[str, Any]], bytes]


def sse_frame(kind: str, event: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode(event) + b"\n\n"


def line_frame(kind: str, event: dict[str, Any]) -> bytes:
    """One JSON document per line (msgspec never writes a raw newline inside one)."""
    return _encode(event) + b"\n"


class _OpenItem:
    __slots__ = ("call_id", "call_index", "id", "kind", "logprobs", "name", "parts")

    def __init__(self, kind: str, item: str) -> None:
        self.kind, self.id = kind, item
        self.parts: list[str] = []
        self.logprobs: list[Any] = []
        self.call_index, self.call_id, self.name = -1, "", ""


class ResponsesStreamWriter:
    def __init__(
        self,
        call: ResponsesCall,
        request: ChatCompletionRequest,
        model: str,
        frame: Frame = sse_frame,
        error_event: bool = True,
    ) -> None:
        self.call, self.request, self.model, self.frame = call, request, model, frame
        self.error_event = error_event
        self.sequence = 0
        self.output: list[OutputItem] = []
        self.open: _OpenItem | None = None
        self.finish_reason: str | None = None
        self.as_summary = call.summary_reasoning

    def _event(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return self.frame(kind, event)

    def _resource(self, **fields: Any) -> ResponseResource:
        return resource(self.call, self.request, self.model, **fields)

    def start(self) -> bytes:
        opening = self._resource(status="in_progress", output=[], usage=None)
        return self._event("response.created", response=opening) + self._event(
            "response.in_progress", response=opening
        )

    # --- chunks ----------------------------------------------------------------------

    def chunk(self, chunk: GenerationChunk) -> bytes:
        parts = [] if self.sequence else [self.start()]
        if chunk.reasoning:
            parts.append(self._reasoning(chunk.reasoning))
        if chunk.text:
            parts.append(self._text(chunk.text, chunk.logprobs))
        for delta in chunk.tool_calls or ():
            parts.append(self._call(delta))
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            parts.append(self._close())
        return b"".join(parts)

    def _opened(self, kind: str, prefix: str) -> tuple[_OpenItem, bytes]:
        closing = self._close()
        item = _OpenItem(kind, item_id(prefix, self.call.response_id, len(self.output)))
        self.open = item
        return item, closing

    def _reasoning(self, text: str) -> bytes:
        item, data = (
            (self.open, b"")
            if self.open and self.open.kind == "reasoning"
            else self._opened("reasoning", "rs")
        )
        index = len(self.output)
        if not item.parts:
            empty = OutputReasoning(item.id, [], [])
            data += self._event("response.output_item.added", output_index=index, item=empty)
            if self.as_summary:
                data += self._event(
                    "response.reasoning_summary_part.added",
                    item_id=item.id, output_index=index, summary_index=0, part={"type": "summary_text", "text": ""},
                )  # fmt: skip
            else:
                data += self._event(
                    "response.content_part.added",
                    item_id=item.id, output_index=index, content_index=0, part={"type": "reasoning_text", "text": ""},
                )  # fmt: skip
        item.parts.append(text)
        if self.as_summary:
            return data + self._event(
                "response.reasoning_summary_text.delta",
                item_id=item.id, output_index=index, summary_index=0, delta=text,
            )  # fmt: skip
        return data + self._event(
            "response.reasoning_text.delta", item_id=item.id, output_index=index, content_index=0, delta=text
        )

    def _text(self, text: str, logprobs: Any) -> bytes:
        item, data = (
            (self.open, b"") if self.open and self.open.kind == "message" else self._opened("message", "msg")
        )
        index = len(self.output)
        if not item.parts:
            empty = OutputMessage(item.id, "in_progress", [])
            data += self._event("response.output_item.added", output_index=index, item=empty)
            data += self._event(
                "response.content_part.added",
                item_id=item.id, output_index=index, content_index=0, part=OutputTextPart(""),
            )  # fmt: skip
        item.parts.append(text)
        pieces = logprobs_of(logprobs)
        item.logprobs.extend(pieces)
        return data + self._event(
            "response.output_text.delta",
            item_id=item.id, output_index=index, content_index=0, delta=text, logprobs=pieces,
        )  # fmt: skip

    def _call(self, delta: ToolCallDelta) -> bytes:
        data = b""
        item = self.open
        if item is None or item.kind != "call" or item.call_index != delta.index:
            item, data = self._opened("call", "fc")
            item.call_index, item.call_id, item.name = delta.index, delta.id or "", delta.name or ""
            added = OutputFunctionCall(item.id, item.call_id, item.name, "", "in_progress")
            data += self._event("response.output_item.added", output_index=len(self.output), item=added)
        if not delta.arguments:
            return data
        item.parts.append(delta.arguments)
        return data + self._event(
            "response.function_call_arguments.delta",
            item_id=item.id, output_index=len(self.output), delta=delta.arguments,
        )  # fmt: skip

    def _close(self) -> bytes:
        """The `.done` events of the open item, which joins `output`."""
        item, self.open = self.open, None
        if item is None:
            return b""
        index, text = len(self.output), "".join(item.parts)
        done: OutputItem
        if item.kind == "reasoning":
            done = reasoning_item(item.id, text, self.as_summary)
            if self.as_summary:
                where = {"item_id": item.id, "output_index": index, "summary_index": 0}
                data = self._event("response.reasoning_summary_text.done", **where, text=text)
                data += self._event("response.reasoning_summary_part.done", **where, part=done.summary[0])
            else:
                where = {"item_id": item.id, "output_index": index, "content_index": 0}
                data = self._event("response.reasoning_text.done", **where, text=text)
                data += self._event("response.content_part.done", **where, part=done.content[0])
        elif item.kind == "message":
            status = "incomplete" if self.finish_reason == "length" else "completed"
            part = OutputTextPart(text, logprobs=item.logprobs)
            done = OutputMessage(item.id, status, [part])
            where = {"item_id": item.id, "output_index": index, "content_index": 0}
            data = self._event("response.output_text.done", **where, text=text, logprobs=item.logprobs)
            data += self._event("response.content_part.done", **where, part=part)
        else:
            done = OutputFunctionCall(item.id, item.call_id, item.name, text, "completed")
            data = self._event(
                "response.function_call_arguments.done",
                item_id=item.id, output_index=index, name=item.name, arguments=text,
            )  # fmt: skip
        self.output.append(done)
        return data + self._event("response.output_item.done", output_index=index, item=done)

    # --- the end ---------------------------------------------------------------------

    def end(self, completion: ChatCompletion) -> bytes:
        return self.finish(usage_of(completion.usage))

    def finish(self, usage: ResponseUsage) -> bytes:
        """The closing events, once the answer is whole (after the opening ones, if no
        chunk came to send them)."""
        data = (b"" if self.sequence else self.start()) + self._close()
        status, incomplete = status_of(self.finish_reason)
        final = self._resource(status=status, output=self.output, usage=usage, incomplete=incomplete)
        self.call.remember(final, self.output)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return data + self._event(kind, response=final)

    def error(self, error: GatewayError) -> bytes:
        self.open = None  # a half-made item is not part of the answer
        code = error.code or error.error_type
        failed = self._resource(
            status="failed", output=self.output, usage=None, error=ResponseError(code, error.message)
        )
        self.call.failed = True
        data = b""
        if self.error_event:
            payload = error_fields(error)
            data = self._event(
                "error",
                code=payload["code"],
                message=payload["message"],
                param=payload["param"],
                error=payload,
            )
        return data + self._event("response.failed", response=failed)
