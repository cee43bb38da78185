"""Chat completions on the pipeline: the body is the internal request itself."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from gateway.context import RequestContext
from gateway.decoding import decode_request
from gateway.endpoints.chat.legacy import legacy_completion
from gateway.endpoints.chat.stream import ChatStreamWriter
from gateway.endpoints.chat.wire import BenchChatCompletion
from gateway.errors import BackendFailed, GatewayError, InvalidRequest
from gateway.pipeline import Outcome, PreparedRequest
from gateway.protocol import ChatCompletionRequest

_encode = msgspec.json.Encoder().encode


class ChatCall:
    __slots__ = ("legacy", "request")
    bench = False

    def __init__(self, request: ChatCompletionRequest) -> None:
        self.request = request
        self.legacy = request.functions is not None  # answer in the `function_call` shape

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        completion = outcome.completion
        return _encode(legacy_completion(completion) if self.legacy else completion)

    def writer(self, prepared: PreparedRequest) -> ChatStreamWriter:
        options = prepared.request.stream_options
        return ChatStreamWriter(
            prepared.response_id,
            prepared.created,
            prepared.entry.id,
            prepared.request.choice_count,
            include_usage=bool(options and options.include_usage),
            legacy=self.legacy,
        )


class ChatEndpoint:
    """POST /v1/chat/completions."""

    name: ClassVar[str] = "chat"
    stream_media_type: ClassVar[str] = "text/event-stream"

    def parse(self, body: bytes, context: RequestContext) -> ChatCall:
        return ChatCall(decode_request(body))

    def error_body(self, error: GatewayError) -> bytes:
        return _encode(error.to_response())


class BenchCall(ChatCall):
    __slots__ = ()
    bench = True

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        if outcome.stats is None:
            raise BackendFailed(f"backend '{prepared.backend.kind}' reported no generation stats")
        completion = outcome.completion
        return _encode(
            BenchChatCompletion(
                id=completion.id,
                created=completion.created,
                model=completion.model,
                choices=completion.choices,
                usage=completion.usage,
                generation_stats=outcome.stats,
            )
        )


class BenchEndpoint(ChatEndpoint):
    """POST /bench/chat/completions: exactly `max_tokens` tokens, plus `generation_stats`."""

    name: ClassVar[str] = "bench"

    def parse(self, body: bytes, context: RequestContext) -> BenchCall:
        request = decode_request(body)
        if request.stream:
            raise InvalidRequest("the bench endpoint never streams", param="stream")
        return BenchCall(request)
