"""The completions stream: `text_completion` chunks over SSE, then `[DONE]`."""

from __future__ import annotations

from gateway.backend import GenerationChunk
from gateway.endpoints.chat.stream import DONE, sse  # the same SSE framing as chat
from gateway.endpoints.completions.logprobs import LegacyLogprobWriter
from gateway.endpoints.completions.wire import CompletionChoice, TextCompletion
from gateway.errors import GatewayError
from gateway.pipeline import PreparedRequest
from gateway.responses import ChatCompletion


def completion_id(prepared: PreparedRequest) -> str:
    return "cmpl-" + prepared.response_id.removeprefix("chatcmpl-")


class CompletionStreamWriter:
    """One chunk per backend chunk; with `include_usage`, a last chunk with `choices: []`
    and the usage."""

    __slots__ = ("created", "id", "include_usage", "logprobs", "model")

    def __init__(
        self,
        response_id: str,
        created: int,
        model: str,
        choices: int,
        top_logprobs: int | None,
        include_usage: bool,
    ) -> None:
        self.id, self.created, self.model = response_id, created, model
        self.include_usage = include_usage
        self.logprobs = (
            [LegacyLogprobWriter(top_logprobs) for _ in range(choices)] if top_logprobs is not None else None
        )

    def chunk(self, chunk: GenerationChunk) -> bytes:
        legacy = None
        if self.logprobs is not None and chunk.logprobs:
            legacy = self.logprobs[chunk.choice].convert(chunk.logprobs)
        choice = CompletionChoice(chunk.text, chunk.choice, legacy, chunk.finish_reason)
        return sse(TextCompletion(self.id, self.created, self.model, [choice]))

    def end(self, completion: ChatCompletion) -> bytes:
        if not self.include_usage:
            return DONE
        return sse(TextCompletion(self.id, self.created, self.model, [], completion.usage)) + DONE

    def error(self, error: GatewayError) -> bytes:
        return sse(error.to_response())
