"""From backend `GenerationChunk`s to the pipeline's `ChatCompletion`.

A non-streamed answer is assembled from the same chunks a stream sends, so
both paths (and the hooks that see chunks) behave identically on every endpoint.
"""

from __future__ import annotations

from msgspec import UNSET

from gateway.backend import GenerationChunk, TokenLogprob, TokenUsage
from gateway.responses import (
    Choice,
    ChoiceLogprobs,
    CompletionTokensDetails,
    FunctionCallOut,
    PromptTokensDetails,
    ResponseMessage,
    ToolCallOut,
    Usage,
)


def to_usage(tokens: TokenUsage) -> Usage:
    return Usage(
        prompt_tokens=tokens.prompt_tokens,
        completion_tokens=tokens.completion_tokens,
        total_tokens=tokens.prompt_tokens + tokens.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=tokens.cached_tokens),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=tokens.reasoning_tokens,
            accepted_prediction_tokens=tokens.accepted_prediction_tokens,
            rejected_prediction_tokens=tokens.rejected_prediction_tokens,
        ),
    )


class _ToolCallParts:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class ChoiceAccumulator:
    """Collects one choice's deltas into a final message."""

    def __init__(self, index: int, want_logprobs: bool) -> None:
        self.index = index
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, _ToolCallParts] = {}
        self.logprobs: list[TokenLogprob] | None = [] if want_logprobs else None
        self.finish_reason: str | None = None

    def add(self, chunk: GenerationChunk) -> None:
        if chunk.text:
            self.text.append(chunk.text)
        if chunk.reasoning:
            self.reasoning.append(chunk.reasoning)
        for delta in chunk.tool_calls or ():
            parts = self.tool_calls.setdefault(delta.index, _ToolCallParts())
            parts.id = delta.id or parts.id
            parts.name = delta.name or parts.name
            parts.arguments.append(delta.arguments)
        if chunk.logprobs and self.logprobs is not None:
            self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason

    def choice(self) -> Choice:
        calls = [
            ToolCallOut(id=parts.id, function=FunctionCallOut(parts.name, "".join(parts.arguments)))
            for _, parts in sorted(self.tool_calls.items())
        ]
        text = "".join(self.text)
        message = ResponseMessage(
            content=text if text or not calls else None,
            reasoning_content="".join(self.reasoning) if self.reasoning else UNSET,
            tool_calls=calls or UNSET,
        )
        logprobs = None if self.logprobs is None else ChoiceLogprobs(content=self.logprobs)
        return Choice(self.index, message, self.finish_reason, logprobs)  # type: ignore[arg-type]
