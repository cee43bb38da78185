"""Stored responses (`store: true`): bounded in count and bytes, oldest evicted first.

Each entry keeps the answer as sent (for `GET /v1/responses/{id}`) and the
conversation up to and including it (for `previous_response_id`), as chat
messages without the instructions: OpenAI does not carry instructions over to
a continuation. Both are kept as JSON bytes: thousands of stored messages as
objects would make every garbage collection walk them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import msgspec

from gateway.context import RequestContext
from gateway.errors import GatewayError, InvalidRequest
from gateway.protocol import Message

_encode = msgspec.json.Encoder().encode
_decode_history = msgspec.json.Decoder(list[Message]).decode


class StoredResponse(NamedTuple):
    body: bytes  # the response resource as JSON
    conversation: bytes  # list[Message] as JSON
    model: str
    owner: str | None  # the identity's key id, when a plugin authenticated the caller

    @property
    def size(self) -> int:
        return len(self.body) + len(self.conversation)

    def history(self) -> list[Message]:
        return _decode_history(self.conversation)


def stored(body: bytes, history: list[Message], model: str, owner: str | None) -> StoredResponse:
    return StoredResponse(body, _encode(history), model, owner)


def owner_of(context: RequestContext) -> str | None:
    """Who a response stored now belongs to: the caller's key id, when a plugin authenticated it."""
    return context.identity.key_id if context.identity is not None else None


def owned(entry: StoredResponse, context: RequestContext) -> bool:
    return entry.owner == owner_of(context)


class ResponseNotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.")


def previous_not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{response_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


class ResponseStore:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count, self.max_bytes = max_count, max_bytes
        self.entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self.bytes = 0

    def put(self, response_id: str, entry: StoredResponse) -> None:
        self.delete(response_id)
        if entry.size > self.max_bytes or self.max_count == 0:
            return  # larger than the whole store: never kept
        self.entries[response_id] = entry
        self.bytes += entry.size
        while len(self.entries) > self.max_count or self.bytes > self.max_bytes:
            _, oldest = self.entries.popitem(last=False)
            self.bytes -= oldest.size

    def get(self, response_id: str) -> StoredResponse | None:
        return self.entries.get(response_id)

    def delete(self, response_id: str) -> bool:
        entry = self.entries.pop(response_id, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        return True
