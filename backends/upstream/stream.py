"""What one upstream answer stream has said so far, event by event."""

from __future__ import annotations

import time

import msgspec

from backends.upstream.wire import (
    decode_chunk,
    decode_completion_chunk,
    error_message,
    to_chunk,
    to_legacy_chunk,
    to_usage,
)
from gateway import BackendFailed, GenerationChunk, TokenUsage


class UpstreamStream:
    """Turns each SSE `data` into gateway chunks and keeps what the end needs.

    An error event, a malformed chunk or a choice index beyond `n` ends the
    answer with `BackendFailed`; so does a stream that stops before `[DONE]`
    with a choice unfinished.
    """

    def __init__(self, choices: int, legacy: bool = False) -> None:
        """`legacy`: the upstream streams legacy completions (`text_completion` chunks)."""
        self.choices = choices
        self._decode = decode_completion_chunk if legacy else decode_chunk
        self._to_chunk = to_legacy_chunk if legacy else to_chunk
        self.done = False
        self.first_output: float | None = None
        self._usage: TokenUsage | None = None
        self._finished: set[int] = set()
        self._output_chunks = 0

    def read(self, data: str) -> list[GenerationChunk]:
        if data == "[DONE]":
            self.done = True
            return []
        try:
            upstream_chunk = self._decode(data)
        except msgspec.DecodeError:
            raise BackendFailed("the upstream sent a malformed stream chunk") from None
        if upstream_chunk.error is not None:
            raise BackendFailed(error_message(upstream_chunk.error))
        if upstream_chunk.usage is not None:
            self._usage = to_usage(upstream_chunk.usage)
        chunks = []
        for choice in upstream_chunk.choices or ():
            chunk = self._to_chunk(choice)  # type: ignore[arg-type]
            if chunk is None:
                continue
            if not 0 <= chunk.choice < self.choices:
                raise BackendFailed(f"the upstream answered for choice {chunk.choice}")
            if chunk.finish_reason is not None:
                self._finished.add(chunk.choice)
            if chunk.text or chunk.reasoning or chunk.tool_calls:
                self._output_chunks += 1
                self.first_output = self.first_output or time.perf_counter()
            chunks.append(chunk)
        return chunks

    def usage(self) -> TokenUsage:
        """The upstream's usage; raises if the stream ended early."""
        if not self.done and len(self._finished) < self.choices:
            raise BackendFailed("the upstream stream ended before the answer was complete")
        # A server that ignores `stream_options` sends no usage: count chunks (about a token each).
        return self._usage or TokenUsage(prompt_tokens=0, completion_tokens=self._output_chunks)
