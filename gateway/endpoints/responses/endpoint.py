"""The Responses API on the pipeline: parse a body into the internal request,
answer with the response resource, remember it for `previous_response_id`."""

from __future__ import annotations

import time
from typing import ClassVar

import msgspec

from gateway.context import RequestContext
from gateway.decoding import decode_body
from gateway.endpoints.responses.errors import error_payload
from gateway.endpoints.responses.output import history_of, items_of, resource, status_of, usage_of
from gateway.endpoints.responses.store import (
    ResponseStore,
    StoredResponse,
    owned,
    owner_of,
    previous_not_found,
    stored,
)
from gateway.endpoints.responses.stream import Frame, ResponsesStreamWriter, sse_frame
from gateway.endpoints.responses.translate import (
    chat_request,
    function_tools,
    input_messages,
    refuse_unserved,
)
from gateway.endpoints.responses.wire import (
    CreateResponse,
    FunctionTool,
    OutputItem,
    ResponseResource,
    Summary,
)
from gateway.errors import ErrorResponse, GatewayError, InvalidRequest
from gateway.pipeline import Outcome, PreparedRequest
from gateway.protocol import ChatCompletionRequest, Message

_encode = msgspec.json.Encoder().encode
_decoder = msgspec.json.Decoder(CreateResponse)
Connection = dict[str, StoredResponse]  # a WebSocket's own responses, `store: false` ones too


class ResponsesCall:
    """One `POST /v1/responses` (or WebSocket `response.create`), translated."""

    __slots__ = (
        "_store", "body", "connection", "context", "created_at", "failed", "history", "previous",
        "request", "response_id", "store", "summary", "summary_reasoning", "tools",
    )  # fmt: skip
    bench = False

    def __init__(
        self,
        body: CreateResponse,
        request: ChatCompletionRequest,
        history: list[Message],
        tools: list[FunctionTool],
        context: RequestContext,
        store: ResponseStore,
        connection: Connection | None,
        previous: StoredResponse | None = None,
    ) -> None:
        self.body, self.request, self.history, self.tools = body, request, history, tools
        self.previous = previous
        self.context, self._store, self.connection = context, store, connection
        self.response_id = "resp_" + context.request_id.removeprefix("req_")
        self.created_at = int(time.time())
        self.store = body.store is not False
        reasoning = body.reasoning
        summary = reasoning.summary or reasoning.generate_summary if reasoning else None
        self.summary: Summary | None = None if summary == "none" else summary
        self.summary_reasoning = self.summary is not None  # reasoning is reported as the summary
        self.failed = False

    def authorize(self, context: RequestContext) -> None:
        """Once the caller is known: continue only a response of theirs (another
        caller's is "not found", as `GET` says too)."""
        if self.previous is not None and not owned(self.previous, context):
            raise previous_not_found(self.body.previous_response_id or "")

    def answer(self, prepared: PreparedRequest, outcome: Outcome) -> bytes:
        completion = outcome.completion
        choice = completion.choices[0]
        output = items_of(choice, self.response_id, self.summary_reasoning)
        status, incomplete = status_of(choice.finish_reason)
        usage = usage_of(completion.usage)
        final = resource(self, prepared.request, prepared.entry.id, status, output, usage, incomplete)
        return self.remember(final, output)

    def writer(self, prepared: PreparedRequest, frame: Frame = sse_frame) -> ResponsesStreamWriter:
        return ResponsesStreamWriter(
            self, prepared.request, prepared.entry.id, frame, error_event=self.connection is None
        )

    def remember(self, final: ResponseResource, output: list[OutputItem]) -> bytes:
        """Keep the finished response for continuations: in the store unless `store`
        is false, and on its WebSocket either way. Returns its JSON."""
        body = _encode(final)
        if not (self.store or self.connection is not None):
            return body
        history = [*self.history, *history_of(output)]
        entry = stored(body, history, final.model, owner_of(self.context))
        if self.connection is not None:
            self.connection[self.response_id] = entry
        if self.store:
            self._store.put(self.response_id, entry)
        return body


class ResponsesEndpoint:
    """POST /v1/responses."""

    name: ClassVar[str] = "responses"
    stream_media_type: ClassVar[str] = "text/event-stream"

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def parse(self, body: bytes, context: RequestContext) -> ResponsesCall:
        return self.call(decode_body(body, _decoder), context)

    def call(
        self, body: CreateResponse, context: RequestContext, connection: Connection | None = None
    ) -> ResponsesCall:
        refuse_unserved(body, websocket=connection is not None)
        previous = self.previous(body.previous_response_id, connection)
        model = body.model or (previous.model if previous else None)
        if not model:
            raise InvalidRequest("Missing required parameter: 'model'", param="model")
        earlier = previous.history() if previous else []
        history = [*earlier, *input_messages(body.input, earlier)]
        system = [Message(role="system", content=body.instructions)] if body.instructions else []
        tools = function_tools(body.tools)
        stream = connection is not None or bool(body.stream)
        request = chat_request(body, model, [*system, *history], tools, stream)
        return ResponsesCall(body, request, history, tools, context, self.store, connection, previous)

    def previous(self, response_id: str | None, connection: Connection | None) -> StoredResponse | None:
        """The response a request continues (its WebSocket's first, then the store's)."""
        if response_id is None:
            return None
        entry = (connection or {}).get(response_id) or self.store.get(response_id)
        if entry is None:
            raise previous_not_found(response_id)
        return entry

    @staticmethod
    def error_body(error: GatewayError) -> bytes:  # needs no store: the middleware uses it too
        return _encode(ErrorResponse(error_payload(error)))
