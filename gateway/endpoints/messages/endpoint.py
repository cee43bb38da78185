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
    __slots__ = ("request",)
    bench = False

    def __init__(self, request: ChatCompletionRequest) -> None:
        self.request = request

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        return _encode(message(prepared, outcome.completion, outcome.stop_sequences[0]))

    def writer(self, prepared: PreparedRequest) -> MessagesStreamWriter:
        return MessagesStreamWriter(message_id(prepared), prepared.entry.id)


class MessagesEndpoint:
    """POST /v1/messages."""

    name: ClassVar[str] = "messages"
    stream_media_type: ClassVar[str] = "text/event-stream"

    def parse(self, body: bytes, context: RequestContext) -> MessagesCall:
        return MessagesCall(chat_request(decode_body(body, _decoder)))

    def error_body(self, error: GatewayError) -> bytes:
        return _encode(error_object(error))
