"""Anthropic Messages on the pipeline: parse into the internal request, answer as a `message`."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from gateway.context import RequestContext
from gateway.decoding import decode_body
from gateway.endpoints.messages.answer import error_object, message, message_id
from gateway.endpoints.messages.stream import MessagesStreamWriter
from gateway.endpoints.messages.translate import chat_request
from gateway.endpoints.messages.wire import MessagesRequest
from gateway.errors import GatewayError
from gateway.pipeline import Outcome, PreparedRequest
from gateway.protocol import ChatCompletionRequest

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(MessagesRequest)


class MessagesCall:
    """`omit_thinking`: `thinking.display` is "omitted": thinking blocks keep their
    signature but not their text."""

    __slots__ = ("omit_thinking", "request")
    bench = False

    def __init__(self, request: ChatCompletionRequest, omit_thinking: bool = False) -> None:
        self.request = request
        self.omit_thinking = omit_thinking

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        stop_sequence = outcome.stop_sequences[0] if outcome.stop_sequences else None
        return _encode(message(prepared, outcome.completion, stop_sequence, self.omit_thinking))

    def writer(self, prepared: PreparedRequest) -> MessagesStreamWriter:
        return MessagesStreamWriter(message_id(prepared), prepared.entry.id, self.omit_thinking)


class MessagesEndpoint:
    """POST /v1/messages."""

    name: ClassVar[str] = "messages"
    stream_media_type: ClassVar[str] = "text/event-stream"

    def parse(self, body: bytes, context: RequestContext) -> MessagesCall:
        request: MessagesRequest = decode_body(body, _decoder)
        omit = request.thinking is not None and getattr(request.thinking, "display", None) == "omitted"
        return MessagesCall(chat_request(request), omit)

    def error_body(self, error: GatewayError) -> bytes:
        return _encode(error_object(error))
